"""Head roles from attention on repeated random tokens (Olsson et al. 2022, "In-context Learning and
Induction Heads"; the TransformerLens / ARENA convention).

Input ``[BOS] r r`` with ``r`` a sequence of ``length`` random tokens. For a query ``i`` in the second
copy, the token after the previous occurrence of ``x_i`` sits at ``i - (length - 1)``:

* induction score = mean over second-copy queries of ``A[i, i - (length - 1)]``;
* previous-token score = mean over all queries ``i >= 1`` of ``A[i, i - 1]``.
"""
from __future__ import annotations

import torch

from attnlab.probes.attention import Probe, _accumulate


class TargetMass(Probe):
    """Mean attention each head puts on one target key per query: ``targets [B, T]`` (-1 = no target)."""

    def __init__(self, name: str, targets: torch.Tensor) -> None:
        self.name, self.targets = name, targets
        super().__init__()

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        b, h, c, _ = probs.shape
        t = self.targets[:, self.q_offset + start:self.q_offset + start + c]                   # [B, c]
        has = (t >= 0) & q_valid
        on_target = torch.gather(probs, 3, t.clamp(min=0).view(b, 1, c, 1).expand(b, h, c, 1)).squeeze(-1)
        _accumulate(self.sums, layer, (on_target * has[:, None].float()).sum(-1))
        _accumulate(self.counts, layer, has.float().sum(-1))


def repeated_random_tokens(tokenizer, length: int, batch: int, seed: int = 0) -> torch.Tensor:
    """``[batch, 1 + 2 * length]``: a first token (BOS / CLS if the tokenizer has one) then ``r r``."""
    gen = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids)
    pool = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    r = pool[torch.randint(len(pool), (batch, length), generator=gen)]
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    head = torch.full((batch, 1), first if first is not None else int(pool[0]))
    return torch.cat([head, r, r], dim=1)


def head_role_scores(model, tokenizer, length: int = 50, batch: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """``{"induction": [L, H], "previous_token": [L, H]}`` on repeated random tokens."""
    from attnlab.collect import forward_with_probes

    ids = repeated_random_tokens(tokenizer, length, batch, seed)
    n = ids.shape[1]
    pos = torch.arange(n)
    induction = torch.where(pos > length, pos - (length - 1), torch.full_like(pos, -1)).expand(batch, n)
    previous = torch.where(pos >= 1, pos - 1, torch.full_like(pos, -1)).expand(batch, n)
    probes = [TargetMass("induction", induction), TargetMass("previous_token", previous)]
    forward_with_probes(model, ids, torch.ones_like(ids), probes)
    return {p.name: p.result().mean(dim=1) for p in probes}
