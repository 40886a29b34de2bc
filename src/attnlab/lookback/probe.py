"""The lookback ratio (Chuang et al. 2024, "Lookback Lens", EMNLP), measured through attnlab's seam.

For head ``(l, h)`` and the query row that produces generated token ``t`` (the last row of the decode step)::

    A_ctx = mean attention on the context tokens           (the prompt before the generation suffix)
    A_new = mean attention on the tokens after the context  (the suffix, the tokens generated so far, itself)
    LR    = A_ctx / (A_ctx + A_new)

Means, not sums, as in the paper and in ``step01_extract_attns.py`` of ``voidism/Lookback-Lens``, whose
``context_length = prompt length - extra_prompt_length`` makes the response header (``"\\n#Answer#:"``) count
as new tokens so that ``A_new`` is defined at the first token. Here the header is the chat template's generation
suffix (``<|im_end|>\\n<|im_start|>assistant\\n``), or ``"\\nAnswer:"`` for a model without a template.

The same numbers come from ``model.generate`` (one row per decode step, :func:`generate_with_ratios`) and from one
teacher-forced forward over prompt + reply (every reply row at once, in query chunks, :func:`teacher_forced`);
``tests/test_lookback.py`` checks both against eager attention maps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attnlab import seam
from attnlab.batching import pad_rows
from attnlab.collect import model_inputs
from attnlab.context import TokenContext
from attnlab.errors import AttnlabError
from attnlab.models.config import forward_accepts
from attnlab.plan import Plan
from attnlab.probes.attention import Probe
from attnlab.spans import chat_wrap, has_chat_template

PLAIN_SUFFIX = "\nAnswer:"   # the response header of a model without a chat template (the paper's "\n#Answer#:")


class LookbackRatio(Probe):
    """Per query row: each head's lookback ratio, ``[B, H, Q]`` over every column of the batch (Chuang et al. 2024).

    ``context_end [B]`` is the batch column where each row's context ends: real keys before it are the context,
    real keys from it on (the generation suffix and every generated token) are the new tokens. Rows that see no
    context or no new token (the context's own rows) are NaN. Across a ``generate`` call the rows of the prefill
    and of each decode step are concatenated, so row ``j`` of the result is column ``j`` of the sequence.
    """

    name = "lookback_ratio"
    token_dims = 1

    def __init__(self, context_end) -> None:
        self.context_end = torch.as_tensor(context_end, dtype=torch.long).view(-1)
        super().__init__()

    def reset(self) -> None:
        self.rows: dict[int, list[torch.Tensor]] = {}

    def begin_layer(self, layer, batch, heads, q_len, k_len, context, valid) -> None:
        super().begin_layer(layer, batch, heads, q_len, k_len, context, valid)
        in_context = torch.arange(k_len)[None, :] < self.context_end[:, None]                  # [B, K]
        self.context_keys = (valid & in_context).float()
        self.new_keys = (valid & ~in_context).float()

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        seen = allowed[:, 0].float()                                                           # [B|1, c, K]
        ctx = seen * self.context_keys[:, None, :].to(seen.device)
        new = seen * self.new_keys[:, None, :].to(seen.device)
        a_ctx = (probs * ctx[:, None]).sum(-1) / ctx.sum(-1)[:, None]                          # [B, H, c]
        a_new = (probs * new[:, None]).sum(-1) / new.sum(-1)[:, None]
        ratio = a_ctx / (a_ctx + a_new)
        self.rows.setdefault(layer, []).append(ratio.masked_fill(~q_valid[:, None, :].to(ratio.device), float("nan")))

    def layer_result(self, layer: int) -> torch.Tensor:
        return torch.cat(self.rows[layer], dim=2)

    def result(self) -> torch.Tensor:
        """``[L, B, H, columns]`` over the layers seen, in layer order."""
        return torch.stack([self.layer_result(layer) for layer in sorted(self.rows)])


@dataclass(frozen=True)
class Prompt:
    """A prompt as token ids, and how many of its leading tokens are the context (the rest is the response header)."""

    ids: tuple
    context_end: int


def lookback_prompt(tokenizer, user_text: str) -> Prompt:
    """``user_text`` (context and question) as the model reads it, with the Lookback Lens' context / new-token boundary.

    With a chat template: one user turn plus the generation prompt; the context is everything up to the end of
    the user's text (system turn included), the template's closing and assistant header are new tokens. Without:
    the text (BOS included) then :data:`PLAIN_SUFFIX`, as the paper's prompts end with ``"\\n#Answer#:"``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise AttnlabError("the lookback ratio needs a fast tokenizer (tokenizer.json) to find where the context ends")
    if has_chat_template(tokenizer):
        text, at = chat_wrap(tokenizer, user_text)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    else:
        text, at = user_text + PLAIN_SUFFIX, 0
        enc = tokenizer(text, return_offsets_mapping=True)
    end = at + len(user_text)
    ids = tuple(enc["input_ids"])
    context_end = next((i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s >= end), len(ids))
    if not 0 < context_end < len(ids):
        raise AttnlabError("cannot tell the context from the response header in this prompt: give a non-empty text")
    return Prompt(ids, context_end)


@dataclass
class Trace:
    """One reply under teacher forcing, per reply token ``t`` (the row that produces it).

    ``ratios [L, H, T]`` lookback ratios; ``logprob [T]`` log-probability of the token; ``entropy [T]`` entropy
    (nats) of the next-token distribution; ``hidden [T, D]`` last-layer hidden state.
    """

    ratios: np.ndarray
    logprob: np.ndarray
    entropy: np.ndarray
    hidden: np.ndarray


def eos_ids(model, tokenizer) -> set:
    """The token ids that end a reply (the generation config's, else the tokenizer's); the Lookback Lens keeps it."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = tokenizer.eos_token_id if eos is None else eos
    return set(eos if isinstance(eos, (list, tuple)) else [eos])


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _device(model):
    return next(model.parameters()).device


def teacher_forced(model, tokenizer, prompts: list[Prompt], replies: list[list[int]], *, batch_size: int = 8,
                   on_batch=None) -> list[Trace]:
    """Lookback ratios (Chuang et al. 2024) and the baselines' inputs of given replies, one attached forward per batch.

    The model reads prompt + reply minus its last token (left padded); the row that produces reply token ``t``
    gives its lookback ratio (the same number ``generate`` gives, see the module docstring), the log-probability
    of ``t``, the entropy of that row's next-token distribution and its last-layer hidden state.
    """
    if len(prompts) != len(replies):
        raise AttnlabError(f"{len(prompts)} prompts but {len(replies)} replies: give one reply per prompt")
    if any(len(r) == 0 for r in replies):
        raise AttnlabError("an empty reply has no lookback ratio: give replies of at least one token")
    keep_arg = forward_accepts(model, "logits_to_keep")
    traces = []
    for first in range(0, len(prompts), batch_size):
        ps, rs = prompts[first:first + batch_size], [list(r) for r in replies[first:first + batch_size]]
        seqs = [list(p.ids) + r[:-1] for p, r in zip(ps, rs)]
        ids, mask = pad_rows(seqs, _pad_id(tokenizer))
        width = ids.shape[1]
        probe = LookbackRatio([width - len(s) + p.context_end for s, p in zip(seqs, ps)])
        longest = max(map(len, rs))
        extra = {"logits_to_keep": longest} if keep_arg else {}
        with seam.attached(model, Plan(probes=[probe]), TokenContext(valid=mask.bool())), torch.no_grad():
            out = model(**model_inputs(model, ids, mask, _device(model)), output_hidden_states=True, **extra)
        ratios = probe.result()                                                               # [L, B, H, W]
        logits = out.logits[:, -longest:].float()
        hidden = out.hidden_states[-1]
        for b, reply in enumerate(rs):
            n = len(reply)
            logp = torch.log_softmax(logits[b, longest - n:], dim=-1)                         # [T, V]
            traces.append(Trace(
                ratios=ratios[:, b, :, width - n:].cpu().numpy().astype(np.float32),
                logprob=logp.gather(1, torch.tensor(reply, device=logp.device)[:, None])[:, 0].cpu().numpy(),
                entropy=(-(logp.exp() * logp).sum(-1)).cpu().numpy(),
                hidden=hidden[b, width - n:].float().cpu().numpy()))
        if on_batch:
            on_batch(len(ps))
    return traces


def generate_with_ratios(model, tokenizer, prompts: list[Prompt], max_new_tokens: int, *, sample: bool = False,
                         temperature: float = 1.0, top_p: float = 1.0) -> list[tuple[list[int], np.ndarray]]:
    """``model.generate`` with the lookback ratio (Chuang et al. 2024) probed at every decode step: per prompt
    ``(reply ids, [L, H, T])``.

    The reply ends at its first end-of-text token (kept, as the paper's code keeps it); the ratio of token ``t``
    comes from the last query row of the forward that produced it. ``sample`` draws with ``temperature`` and
    nucleus ``top_p`` (no top-k cut, as the paper's ``top_k 0``); seed torch first for repeatable draws.
    """
    ids, mask = pad_rows([list(p.ids) for p in prompts], _pad_id(tokenizer))
    width = ids.shape[1]
    probe = LookbackRatio([width - len(p.ids) + p.context_end for p in prompts])
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=_pad_id(tokenizer))
    if sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:                                   # unset the model's own sampling defaults, which greedy would warn about
        kwargs.update(temperature=None, top_p=None, top_k=None)
    device = _device(model)
    with seam.attached(model, Plan(probes=[probe]), TokenContext(valid=mask.bool())), torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    ratios = probe.result()                                                                   # [L, B, H, W+T-1]
    eos = eos_ids(model, tokenizer)
    results = []
    for b in range(len(prompts)):
        new = out[b, width:].tolist()
        stop = next((i + 1 for i, tok in enumerate(new) if tok in eos), len(new))
        results.append((new[:stop], ratios[:, b, :, width - 1:width - 1 + stop].cpu().numpy().astype(np.float32)))
    return results
