"""Head roles on repeated random tokens: previous-token, induction and duplicate-token scores.

Input ``[BOS] r r`` with ``r`` a sequence of ``length`` random (non-special) tokens, ``batch`` rows (Olsson et
al. 2022, "In-context Learning and Induction Heads"; the TransformerLens / ARENA convention). With ``A`` a
head's attention:

* previous-token = mean over all queries ``i >= 1`` of ``A[i, i - 1]``;
* induction = mean over second-copy queries ``i > length`` of ``A[i, i - (length - 1)]`` (the token after
  the previous occurrence of ``x_i``: Olsson's prefix matching);
* duplicate-token = mean, over the queries that have an earlier occurrence of their own token, of the total
  attention on those earlier occurrences ``{j < i : x_j = x_i}`` (TransformerLens's ``duplicate_token``
  pattern, averaged over the queries it covers instead of over all queries).

All three are means over rows too, and are computed by probes on attnlab's chunked attention.
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


class SameTokenMass(Probe):
    """Mean attention each head puts on the earlier keys that hold the query's own token (duplicate-token).

    ``input_ids [B, T]``; only real queries with at least one earlier real key of the same id count.
    """

    name = "duplicate_token"

    def __init__(self, input_ids: torch.Tensor) -> None:
        self.ids = input_ids
        super().__init__()

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        c, k = probs.shape[2], probs.shape[3]
        q_pos = torch.arange(start, start + c) + self.q_offset
        same = self.ids[:, q_pos, None] == self.ids[:, None, :k]                                 # [B, c, K]
        keys = same & (torch.arange(k)[None, None, :] < q_pos[None, :, None]) & allowed[:, 0]
        mass = (probs * keys[:, None].float()).sum(-1)                                          # [B, H, c]
        has = (keys.any(-1) & q_valid).float()
        _accumulate(self.sums, layer, (mass * has[:, None]).sum(-1))
        _accumulate(self.counts, layer, has.sum(-1))


def repeated_random_tokens(tokenizer, length: int, batch: int, seed: int = 0) -> torch.Tensor:
    """``[batch, 1 + 2 * length]``: a first token (BOS / CLS if the tokenizer has one) then ``r r``."""
    gen = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids)
    pool = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    r = pool[torch.randint(len(pool), (batch, length), generator=gen)]
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    head = torch.full((batch, 1), first if first is not None else int(pool[0]))
    return torch.cat([head, r, r], dim=1)


def role_probes(ids: torch.Tensor, length: int) -> list[Probe]:
    """The previous-token, induction and duplicate-token probes for ``ids`` from :func:`repeated_random_tokens`."""
    batch, n = ids.shape
    pos = torch.arange(n)
    none = torch.full_like(pos, -1)
    induction = torch.where(pos > length, pos - (length - 1), none).expand(batch, n)
    previous = torch.where(pos >= 1, pos - 1, none).expand(batch, n)
    return [TargetMass("previous_token", previous), TargetMass("induction", induction), SameTokenMass(ids)]


def head_role_scores(model, tokenizer, length: int = 50, batch: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """``{"previous_token", "induction", "duplicate_token": [L, H]}`` on repeated random tokens (Olsson et al.
    2022; TransformerLens's duplicate-token pattern): see the module docstring for each definition."""
    from attnlab.collect import forward_with_probes

    ids = repeated_random_tokens(tokenizer, length, batch, seed)
    probes = role_probes(ids, length)
    forward_with_probes(model, ids, torch.ones_like(ids), probes)
    return {p.name: p.result().mean(dim=1) for p in probes}
