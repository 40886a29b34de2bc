"""Reply scorers: how a generated chat reply is read and scored against an example's answers.

A reply scorer is ``score(reply, example) -> dict[str, float]``. Its FIRST key is the primary metric
(1.0 / 0.0 per example; the paired statistics of :mod:`attnlab.evals.harness` use it); further keys are
secondary metrics, also 0 / 1 per example, reported with their own unsteered / steered means and paired
CI. A reply that cannot be read scores 0 on every metric and never raises. The key that says whether
anything could be read at all is ``parsed`` unless the scorer names another (``json``'s ``format``); the
harness counts the replies where it is 0.

Scorers are registered by name with ``@reply_scorer("name")`` into ``REPLY_SCORERS``. The teacher-forced
scorers (``exact``, ``loglik``, ``labels``) score the answer's tokens directly and live in the harness.

Chat replies are scored the way the papers score free-form output: PASTA (Zhang et al. 2024) reads a JSON
object's field and matches the answer; IFEval (Zhou et al. 2023), as used by InstABoost and SpotLight,
checks replies with regular expressions; retrieval (Liu et al. 2023, "Lost in the Middle") looks for the
answer in the reply.
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from attnlab.errors import AttnlabError

if TYPE_CHECKING:
    from attnlab.evals.tasks import EvalExample

TEACHER_FORCED = ("exact", "loglik", "labels")


@dataclass(frozen=True)
class ReplyScorer:
    """A registered reply scorer: the function and the name of its key that says the reply could be read."""

    name: str
    score: Callable[[str, "EvalExample"], dict[str, float]]
    parsed: str = "parsed"


REPLY_SCORERS: dict[str, ReplyScorer] = {}


def reply_scorer(name: str, parsed: str = "parsed"):
    """Register ``score(reply, example) -> dict[str, float]`` under ``name``; ``parsed`` names its key that is
    1.0 when the reply could be read at all (the harness counts the replies where it is 0)."""
    def register(fn):
        if name in REPLY_SCORERS or name in TEACHER_FORCED:
            raise AttnlabError(f"a scorer named '{name}' is already registered: choose another name")
        REPLY_SCORERS[name] = ReplyScorer(name, fn, parsed)
        return fn
    return register


def get_reply_scorer(name: str) -> ReplyScorer:
    """The reply scorer registered as ``name``; an unknown name is refused with the list of known ones."""
    if name not in REPLY_SCORERS:
        raise AttnlabError(f"unknown scorer '{name}': use one of {', '.join(TEACHER_FORCED + tuple(REPLY_SCORERS))}")
    return REPLY_SCORERS[name]


ANSWER_PREFIX = re.compile(r"^(?:(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is\s*)?:?|a:)\s*", re.I)
PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    """``text`` lower-cased, an "The answer is" / "Answer:" prefix dropped, punctuation removed, spaces collapsed."""
    text = ANSWER_PREFIX.sub("", text.strip())
    return " ".join(text.lower().translate(PUNCTUATION).split())


def first_line(reply: str) -> str:
    """The reply's first line that is not blank ('' if there is none)."""
    return next((line for line in reply.splitlines() if line.strip()), "")


def _read(found: bool, correct: bool, primary: str = "correct", parsed: str = "parsed") -> dict[str, float]:
    return {primary: float(found and correct), parsed: float(found)}


@reply_scorer("line")
def score_line(reply: str, example: "EvalExample") -> dict[str, float]:
    """The reply's normalised first line (see :func:`normalise`) equals a normalised answer."""
    line = normalise(first_line(reply))
    return _read(bool(line), line in {normalise(a) for a in example.answers})


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def first_number(text: str) -> float | None:
    """The first number written in ``text`` (``1,234`` read as 1234), or None."""
    match = NUMBER.search(THOUSANDS.sub("", text))
    return float(match.group()) if match else None


@reply_scorer("number")
def score_number(reply: str, example: "EvalExample") -> dict[str, float]:
    """The first number in the reply equals an answer (as numbers: ``42.0`` is ``42``), as retrieval is scored."""
    answers = [first_number(a) for a in example.answers]
    if None in answers:
        raise AttnlabError(f"scorer 'number' needs numeric answers, got {example.answers!r}: use 'line' or 'contains'")
    found = first_number(reply)
    return _read(found is not None, found in answers)


def first_json_object(text: str) -> dict | None:
    """The first ``{…}`` in ``text`` that parses as a JSON object (code fences and prose around it ignored)."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


@reply_scorer("json", parsed="format")
def score_json(reply: str, example: "EvalExample") -> dict[str, float]:
    """PASTA's JSON formatting: ``prediction`` = the object's ``meta["key"]`` equals an answer (normalised),
    ``format`` = a JSON object was found in the reply at all."""
    key = example.meta.get("key")
    if not isinstance(key, str):
        raise AttnlabError("scorer 'json' needs meta['key'], the field to read, on every example")
    obj = first_json_object(reply)
    value = obj.get(key) if obj is not None else None
    correct = isinstance(value, (str, int, float)) and normalise(str(value)) in {normalise(a) for a in example.answers}
    return _read(obj is not None, correct, primary="prediction", parsed="format")


@reply_scorer("regex")
def score_regex(reply: str, example: "EvalExample") -> dict[str, float]:
    """The regular expression ``meta["pattern"]`` matches somewhere in the reply (IFEval-style checks)."""
    pattern = example.meta.get("pattern")
    if not isinstance(pattern, str):
        raise AttnlabError("scorer 'regex' needs meta['pattern'], a regular expression, on every example")
    return _read(bool(reply.strip()), re.search(pattern, reply) is not None)


@reply_scorer("contains")
def score_contains(reply: str, example: "EvalExample") -> dict[str, float]:
    """An answer (spaces around it stripped, case kept) appears in the reply."""
    return _read(bool(reply.strip()), any(a.strip() in reply for a in example.answers))


@reply_scorer("prefix")
def score_prefix(reply: str, example: "EvalExample") -> dict[str, float]:
    """The reply (leading spaces stripped) starts with an answer."""
    return _read(bool(reply.strip()), any(reply.strip().startswith(a.strip()) for a in example.answers))
