"""IFEval-style verifiable constraints (Zhou et al. 2023, "Instruction-Following Evaluation for Large Language
Models"), the kind of instruction following InstABoost (Guardieiro et al. 2025) and SpotLight (Venkateswaran &
Contractor 2025) steer towards; and PASTA's pronoun check (Zhang et al. 2024).

Each constraint is a check ``check(reply, arg) -> bool`` written as IFEval's checker writes it, and is registered
as the reply scorer ``ifeval-<name>``; the scorer ``ifeval`` applies the constraint an example names in
``meta["constraint"]`` (with ``meta["arg"]``), so one task can mix them. Every constraint scorer returns

* ``strict``: the reply as given passes the check (IFEval's strict accuracy, the primary metric);
* ``loose``: some variant of the reply passes -- with its first line, last line or both removed, and with
  markdown ``*`` removed (IFEval's loose accuracy: a preamble such as "Sure, here it is:" is forgiven);
* ``parsed``: the reply holds any non-blank text.

| constraint | ``arg`` | the reply passes when |
| --- | --- | --- |
| ``upper`` | -- | every cased letter is upper case and there is one (``str.isupper``) |
| ``lower`` | -- | every cased letter is lower case and there is one (``str.islower``) |
| ``no-commas`` | -- | it holds no ``,`` |
| ``include-word`` | the word | the word appears as a whole word, in any case |
| ``end-with`` | the phrase | stripped of spaces and quotes it ends with the phrase, in any case |
| ``bullets`` | N | exactly N lines start with a markdown bullet (``* `` or ``-``) |
| ``json-only`` | -- | stripped of a markdown code fence, the whole reply parses as a JSON object or array |
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Callable

from attnlab.errors import AttnlabError
from attnlab.evals.scorers import reply_scorer

if TYPE_CHECKING:
    from attnlab.evals.tasks import EvalExample


def is_upper(reply: str, arg=None) -> bool:
    """IFEval ``change_case:english_capital``: all letters upper case."""
    return reply.isupper()


def is_lower(reply: str, arg=None) -> bool:
    """IFEval ``change_case:english_lowercase``: all letters lower case."""
    return reply.islower()


def has_no_commas(reply: str, arg=None) -> bool:
    """IFEval ``punctuation:no_comma``: not one comma."""
    return "," not in reply


def includes_word(reply: str, word: str) -> bool:
    """IFEval ``keywords:existence``: ``word`` appears as a whole word, in any case."""
    return re.search(rf"\b{re.escape(word)}\b", reply, flags=re.IGNORECASE) is not None


def ends_with(reply: str, phrase: str) -> bool:
    """IFEval ``startend:end_checker``: the reply, stripped of spaces and quotes, ends with ``phrase`` (any case)."""
    return reply.strip().strip('"').lower().endswith(phrase.strip().lower())


BULLET_STAR = re.compile(r"^\s*\*[^\*].*$", flags=re.MULTILINE)
BULLET_DASH = re.compile(r"^\s*-.*$", flags=re.MULTILINE)


def count_bullets(reply: str) -> int:
    """The number of markdown bullet lines (``* item`` or ``- item``), as IFEval counts them."""
    return len(BULLET_STAR.findall(reply)) + len(BULLET_DASH.findall(reply))


def has_bullets(reply: str, n: int) -> bool:
    """IFEval ``detectable_format:number_bullet_lists``: exactly ``n`` bullet lines."""
    return count_bullets(reply) == int(n)


FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", flags=re.IGNORECASE | re.DOTALL)


def is_json_only(reply: str, arg=None) -> bool:
    """IFEval ``detectable_format:json_format``: the whole reply (a surrounding ```json fence allowed) is JSON;
    stricter than IFEval in asking for an object or an array (a bare number or string is not an answer)."""
    text = reply.strip()
    fenced = FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError:
        return False
    return isinstance(value, (dict, list))


CONSTRAINTS: dict[str, Callable[[str, object], bool]] = {
    "upper": is_upper, "lower": is_lower, "no-commas": has_no_commas, "include-word": includes_word,
    "end-with": ends_with, "bullets": has_bullets, "json-only": is_json_only,
}
NEEDS_ARG = ("include-word", "end-with", "bullets")


def loose_variants(reply: str) -> list[str]:
    """IFEval's loose reading: the reply with its first, last or both lines cut, each with and without ``*``."""
    lines = reply.split("\n")
    cuts = [reply, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return cuts + [cut.replace("*", "") for cut in cuts]


def check_constraint(name: str, reply: str, arg=None) -> dict[str, float]:
    """``strict`` / ``loose`` / ``parsed`` of ``reply`` under constraint ``name`` (see the module's table)."""
    if name not in CONSTRAINTS:
        raise AttnlabError(f"unknown constraint '{name}': use one of {', '.join(CONSTRAINTS)}")
    if name in NEEDS_ARG and arg is None:
        raise AttnlabError(f"constraint '{name}' needs meta['arg'] on every example")
    check = CONSTRAINTS[name]
    strict = bool(reply.strip()) and check(reply, arg)
    loose = any(v.strip() and check(v.strip(), arg) for v in loose_variants(reply))
    return {"strict": float(strict), "loose": float(loose), "parsed": float(bool(reply.strip()))}


def _constraint_scorer(name: str):
    def score(reply: str, example: "EvalExample") -> dict[str, float]:
        return check_constraint(name, reply, example.meta.get("arg"))
    score.__doc__ = f"IFEval's ``{name}`` constraint on the reply: strict, loose, parsed."
    return score


for _name in CONSTRAINTS:
    reply_scorer(f"ifeval-{_name}")(_constraint_scorer(_name))


@reply_scorer("ifeval")
def score_ifeval(reply: str, example: "EvalExample") -> dict[str, float]:
    """The constraint ``meta["constraint"]`` (argument ``meta["arg"]``) on the reply: strict, loose, parsed."""
    return check_constraint(example.meta.get("constraint"), reply, example.meta.get("arg"))


GENDERED = re.compile(r"\b(she|he|her|hers|herself|him|his|himself)\b", flags=re.IGNORECASE)
NEUTRAL = re.compile(r"\b(they|them|their|theirs|themselves|themself)\b", flags=re.IGNORECASE)


@reply_scorer("pronouns")
def score_pronouns(reply: str, example: "EvalExample") -> dict[str, float]:
    """PASTA's pronoun changing (Zhang et al. 2024): ``changed`` = no she / he / her / hers / herself / him /
    his / himself is left (whole words, any case), they / them / their / theirs / themselves / themself
    appears, and the person's name ``meta["name"]`` (when given) is still there -- a reply that only copies an
    example sentence is no rewrite; ``no_she_he`` = no she or he is left (PASTA's looser accuracy), name
    kept likewise; ``parsed`` = any text at all."""
    text = reply.strip()
    if not text:
        return {"changed": 0.0, "no_she_he": 0.0, "parsed": 0.0}
    kept = example.meta.get("name", "") in text
    left = {m.lower() for m in GENDERED.findall(text)}
    return {"changed": float(kept and not left and NEUTRAL.search(text) is not None),
            "no_she_he": float(kept and not left & {"she", "he"}), "parsed": 1.0}
