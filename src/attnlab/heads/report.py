"""The JSON schema of ``attnlab heads`` (pydantic; ``HeadReport.model_json_schema()``) and its top-K ranking."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from attnlab.report.schema import ModelInfo
from attnlab.spans import head_name


class HeadScore(BaseModel):
    """One score for every (layer, head), with what it means and what it was measured on."""
    description: str
    inputs: str = Field(description="what the score was measured on")
    reference: str = Field(description="the paper or tool whose definition it follows")
    order: Literal["high", "low"] = Field(description="which end ranks first in the top-K (and is flagged)")
    threshold: float | None = Field(description="flagged: value > threshold (order high) or <= threshold (low)")
    values: list[list[float]] | None = Field(description="[layer][head]; None when it could not be measured")
    flagged: list[str] = Field(description="heads past the threshold, best first, e.g. L3H5")
    note: str | None = None


class NeedleExample(BaseModel):
    """One teacher-forced needle copy of the retrieval score."""
    needle: str
    depth: float
    scored_tokens: int = Field(description="answer tokens that occur once in the context")
    copy_accuracy: float = Field(description="share of answer tokens the model predicts greedily")
    kept: bool = Field(description="copy_accuracy > min_copy: counted in the retrieval score")


class HeadReport(BaseModel):
    """Everything ``attnlab heads`` measured, with provenance."""
    attnlab_version: str
    model: ModelInfo
    settings: dict
    scores: dict[str, HeadScore]
    needle_examples: list[NeedleExample] = Field(default_factory=list)
    runtime_s: dict[str, float] = Field(description="seconds per group of inputs (random, needle, text)")


def ranked(values: list[list[float]], order: str) -> list[tuple[str, float]]:
    """Every head as ``(L3H5, value)``, best first (highest for order ``high``, lowest for ``low``)."""
    flat = [(head_name(l, h), v) for l, row in enumerate(values) for h, v in enumerate(row)]
    return sorted(flat, key=lambda item: -item[1] if order == "high" else item[1])


def flagged_heads(values: list[list[float]], order: str, threshold: float | None) -> list[str]:
    """The heads past ``threshold`` (``> threshold`` for order high, ``<=`` for low), best first."""
    if threshold is None:
        return []
    return [name for name, v in ranked(values, order) if (v > threshold if order == "high" else v <= threshold)]


def top_heads(score: HeadScore, k: int) -> list[tuple[str, float]]:
    """The ``k`` best heads of a score (none when it has no values)."""
    return ranked(score.values, score.order)[:k] if score.values is not None else []
