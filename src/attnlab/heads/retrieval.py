"""Retrieval heads (Wu, Wang, Xiao, Peng, Fu 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality", ICLR 2025; code ``nightdessert/Retrieval_Head``).

A head copy-pastes a token when its most attended key is the very token being copied. Protocol here
(needle copy, teacher-forced, deterministic):

* input: ``[lead] haystack[:cut] needle haystack[cut:] question answer``, with ``context_tokens`` tokens of
  the bundled KJV prose (``data/haystack.txt``) from a seeded start, the needle (one of :data:`NEEDLES`)
  inserted at each of ``depths`` (snapped back to a word start), then ``"\\n\\nQuestion: ...\\nAnswer:"``
  and, as the answer, the needle's own tokens again;
* scored answer positions: answer tokens ``w`` that occur exactly once in the context (everything before
  the answer) -- that occurrence is then in the needle; at the query just before ``w`` (the one that predicts
  it) the head hits iff ``argmax_j A[query, j]`` is that occurrence;
* per example, score = hits / scored positions; an example is kept if the model's greedy prediction is the
  answer token at more than half of the answer positions (the paper keeps a sample when ROUGE-1 recall of
  the needle is above 50); the retrieval score is the mean over kept examples. Heads above 0.1 are retrieval
  heads (the paper's threshold).

Differences from the paper: the paper scores the tokens the model itself generates (greedy decoding, the
hit being ``argmax`` in the needle span with the same token); here the needle is fed as the answer, so
every example scores the same positions, and only tokens unique in the context are scored (so "the same
token in the needle" has one place to be). The paper uses Paul Graham essays, 1K-50K tokens and 20 lengths;
here one length of the model's reach (``context_tokens``, default 1000) and the KJV prose bundled with attnlab.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources

import torch

from attnlab.errors import AttnlabError
from attnlab.probes.attention import Probe, _accumulate

RETRIEVAL_THRESHOLD = 0.1
MIN_COPY = 0.5
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
NEEDLES = (
    ("The secret ingredient of Marisol's lemon cake is a spoonful of smoked paprika from Valencia.",
     "What is the secret ingredient of Marisol's lemon cake?"),
    ("The harbour pilot Oskar Lindqvist painted the lighthouse on Kestrel Point cobalt blue in 1887.",
     "Who painted the lighthouse on Kestrel Point, and in what colour?"),
    ("To open the old observatory, turn the brass key twice and whisper the word quokka.",
     "How does one open the old observatory?"),
)


class TopKeyHit(Probe):
    """Share of queries whose most attended key is their target: ``targets [B, T]`` (-1 = not scored).

    ``result()`` is per row, ``[L, B, H]`` (hits / scored queries of that row).
    """

    name = "retrieval"

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets
        super().__init__()

    def update(self, layer, start, probs, allowed, q_valid) -> None:
        c = probs.shape[2]
        t = self.targets[:, self.q_offset + start:self.q_offset + start + c]                   # [B, c]
        has = (t >= 0) & q_valid
        hit = (probs.argmax(-1) == t[:, None]).float()                                          # [B, H, c]
        _accumulate(self.sums, layer, (hit * has[:, None].float()).sum(-1))
        _accumulate(self.counts, layer, has.float().sum(-1))


@dataclass
class NeedleBatch:
    """One needle at every depth: ``ids [D, T]`` (equal lengths), where the answer starts, the scored targets."""

    needle: str
    ids: torch.Tensor
    answer_start: int
    targets: torch.Tensor                               # [D, T]: at query p - 1, the context position of x_p

    @property
    def scored(self) -> int:
        """Answer positions scored per row (the same in every row)."""
        return int((self.targets[0] >= 0).sum())


def _leading_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text (BOS), or none."""
    full, plain = tokenizer("x")["input_ids"], tokenizer("x", add_special_tokens=False)["input_ids"]
    return list(full[:full.index(plain[0])]) if plain and plain[0] in full else []


def _unique_targets(row: list[int], answer_start: int) -> torch.Tensor:
    """``[T]``: at ``p - 1`` for each answer position ``p`` whose token occurs once in ``row[:answer_start]``, that
    occurrence's position; -1 elsewhere."""
    context = row[:answer_start]
    targets = torch.full((len(row),), -1)
    for p in range(answer_start, len(row)):
        if context.count(row[p]) == 1:
            targets[p - 1] = context.index(row[p])
    return targets


def needle_batches(tokenizer, context_tokens: int = 1000, depths=DEPTHS, seed: int = 0) -> list[NeedleBatch]:
    """The needle-copy inputs of the module docstring: one :class:`NeedleBatch` per needle of :data:`NEEDLES`."""
    rng = random.Random(seed)
    words = resources.files("attnlab").joinpath("data/haystack.txt").read_text(encoding="utf-8").split(" ")
    lead = _leading_ids(tokenizer)
    batches = []
    for needle, question in NEEDLES:
        start = rng.randrange(0, max(1, len(words) - 2 * context_tokens))
        hay = tokenizer(" ".join(words[start:start + 2 * context_tokens]), add_special_tokens=False,
                        verbose=False)["input_ids"]
        if len(hay) < context_tokens:
            raise AttnlabError(f"the bundled haystack holds fewer than {context_tokens} tokens from the start drawn "
                               f"({len(hay)}): use context_tokens <= {len(hay)}")
        hay = hay[:context_tokens]
        word_starts = [i for i, t in enumerate(hay) if tokenizer.decode([t]).startswith((" ", "\n"))] + [len(hay)]
        needle_ids = tokenizer(" " + needle, add_special_tokens=False)["input_ids"]
        tail = tokenizer(f"\n\nQuestion: {question}\nAnswer:", add_special_tokens=False)["input_ids"]
        rows = []
        for depth in depths:
            cut = max([0] + [i for i in word_starts if i <= round(depth * len(hay))])
            rows.append(lead + hay[:cut] + needle_ids + hay[cut:] + tail + needle_ids)
        answer_start = len(rows[0]) - len(needle_ids)
        targets = torch.stack([_unique_targets(row, answer_start) for row in rows])
        batches.append(NeedleBatch(needle, torch.tensor(rows), answer_start, targets))
    return batches


def retrieval_scores(model, tokenizer, context_tokens: int = 1000, depths=DEPTHS, seed: int = 0,
                     min_copy: float = MIN_COPY, on_forward=None) -> dict:
    """Retrieval scores of Wu et al. 2024 on teacher-forced needle copies (protocol in the module docstring).

    Returns ``{"scores": [L, H] or None (no example kept), "per_example": [N, L, H], "copy_accuracy": [N],
    "kept": [N] bool, "scored_tokens": [N]}``; ``on_forward()`` is called after each needle's forward.
    """
    from attnlab.collect import forward_with_probes

    base = getattr(model, "base_model", model)
    head = model.get_output_embeddings()
    per_example, copy, scored = [], [], []
    for batch in needle_batches(tokenizer, context_tokens, depths, seed):
        probe = TopKeyHit(batch.targets)
        hidden = {}
        handle = base.register_forward_hook(lambda m, a, out: hidden.setdefault("h", out[0]))
        try:
            forward_with_probes(model, batch.ids, torch.ones_like(batch.ids), [probe])
        finally:
            handle.remove()
        a = batch.answer_start
        with torch.no_grad():
            predicted = head(hidden["h"][:, a - 1:-1]).argmax(-1).cpu()                          # [D, answer]
        copy.append((predicted == batch.ids[:, a:]).float().mean(-1))
        per_example.append(probe.result().transpose(0, 1))                                     # [D, L, H]
        scored += [batch.scored] * len(batch.ids)
        if on_forward:
            on_forward()
    per_example, copy = torch.cat(per_example), torch.cat(copy)
    kept = copy > min_copy
    return {"scores": per_example[kept].mean(0) if kept.any() else None, "per_example": per_example,
            "copy_accuracy": copy, "kept": kept, "scored_tokens": scored}
