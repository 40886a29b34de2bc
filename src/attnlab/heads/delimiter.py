"""Delimiter heads of encoders (Clark, Khandelwal, Levy, Manning 2019, "What Does BERT Look At?").

Per head and text, the mean over real queries of the total attention on a token class ``C``:
``a_C = (1/T) sum_i sum_{j in C} A[i, j]``, for ``C`` = [CLS], [SEP], and punctuation (tokens ``.`` and
``,``, word-piece markers stripped), then the mean over texts. Clark et al. label a head as attending to a
class when ``a_C > 0.6``. Computed with :class:`attnlab.probes.attention.SpanMass` over the class's keys.
"""
from __future__ import annotations

import torch

from attnlab.probes.attention import SpanMass

DELIMITER_THRESHOLD = 0.6
PUNCTUATION = {".", ","}


def _is_punctuation(token: str) -> bool:
    return token.removeprefix("##").lstrip("Ġ▁") in PUNCTUATION


def delimiter_masks(tokenizer, input_ids: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"cls_mass", "sep_mass", "punctuation_mass": [B, T] bool}``: each class's real tokens in the batch."""
    rows = [tokenizer.convert_ids_to_tokens(row) for row in input_ids.tolist()]
    punct = torch.tensor([[_is_punctuation(t) for t in row] for row in rows], dtype=torch.bool).view_as(input_ids)
    masks = {"cls_mass": input_ids == tokenizer.cls_token_id, "sep_mass": input_ids == tokenizer.sep_token_id,
             "punctuation_mass": punct}
    return {name: mask & valid for name, mask in masks.items()}


def delimiter_probes(tokenizer, input_ids: torch.Tensor, valid: torch.Tensor) -> list[SpanMass]:
    """One :class:`SpanMass` per delimiter class, named ``span_mass:cls_mass`` etc."""
    return [SpanMass(name, mask) for name, mask in delimiter_masks(tokenizer, input_ids, valid).items()]
