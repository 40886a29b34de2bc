"""Evaluation tasks: seeded, deterministic generators of prompts, answers and the spans a method acts on.

Every generator takes the tokenizer, the number of examples, a seed and a token budget (``max_tokens``,
by default the model's positions) and refuses, with the largest setting that fits, a request whose
prompts would not fit. Formats follow :mod:`attnlab.models.synthetic`, which the bundled model was
trained on.

| task | what is asked | spans | scorer | buckets |
| --- | --- | --- | --- | --- |
| ``kv`` | key-value lookup among distractors | ``emphasis`` = the relevant pair, ``instruction`` = the query | exact | position of the pair (lost in the middle) |
| ``needle`` | a ``key=value`` record hidden in prose | ``emphasis`` = the needle | exact | depth x length |
| ``override`` | "Previously X, but now Y" (CounterFact) | ``emphasis`` = the new fact | new answer more likely than old (PASTA's efficacy score) | -- |
| ``format`` | a format instruction before long prose | ``instruction`` = the instruction | exact | style |
| ``kv-masked`` | ``kv`` for encoders: the value is ``[MASK]`` | as ``kv`` | argmax at the mask | position |
| ``jsonl`` | the user's records ``{prompt, answer(s), spans}`` | the record's | exact / prefix / contains / loglik | -- |
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from attnlab.errors import AttnlabError
from attnlab.models.synthetic import WORDS, format_instruction, kv_retrieval, override
from attnlab.spans import strip_markers

SCORERS = ("exact", "prefix", "contains", "loglik")


@dataclass
class EvalExample:
    """One prompt with its accepted answers, the spans methods act on, a bucket label and the scorer's parameters."""

    prompt: str
    answers: list[str]
    spans: dict = field(default_factory=dict)
    bucket: str = "all"
    wrong: list[str] = field(default_factory=list)   # alternatives for the loglik scorer
    meta: dict = field(default_factory=dict)         # the scorer's parameters (a pattern, a JSON key, the labels)


@dataclass
class Task:
    """A generated task: examples, how to score them, and the parameters that made them."""

    name: str
    examples: list[EvalExample]
    scorer: str
    params: dict
    encoder: bool = False


def _fits(tokenizer, prompts_answers, max_tokens: int | None) -> int:
    return max(len(tokenizer(p + a)["input_ids"]) for p, a in prompts_answers)


def _check_budget(name: str, longest: int, max_tokens: int | None, hint: str) -> None:
    if max_tokens is not None and longest > max_tokens:
        raise AttnlabError(f"task '{name}' makes prompts of {longest} tokens but the model takes at most "
                           f"{max_tokens}: {hint}")


def kv_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, pairs: int = 16,
            absent: bool = False) -> Task:
    """Key-value retrieval with the relevant pair's position swept evenly over the records."""
    if pairs < 1 or pairs > len(WORDS) - 1:
        raise AttnlabError(f"pairs must be between 1 and {len(WORDS) - 1}, got {pairs}")
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        position = i % pairs
        ex = kv_retrieval(rng, pairs, query_index=position)
        pair = f"{ex['query']}={ex['answer'].strip()}."
        examples.append(EvalExample(ex["prompt"], [ex["answer"]], {"emphasis": pair, "instruction": f"Query: {ex['query']}?"},
                                    bucket=f"{int(5 * position / pairs) * 20}-{int(5 * position / pairs) * 20 + 20}%"))
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples], max_tokens)
    if max_tokens is not None and longest > max_tokens:
        per_pair = longest / pairs
        raise AttnlabError(f"task 'kv' with {pairs} pairs makes prompts of {longest} tokens but the model takes at "
                           f"most {max_tokens}: use --pairs {max(1, int((max_tokens - 12) / per_pair))} or fewer")
    return Task("kv", examples, "exact", {"pairs": pairs, "n": n, "seed": seed})


def _haystack() -> str:
    return resources.files("attnlab").joinpath("data/haystack.txt").read_text(encoding="utf-8")


def needle_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None,
                lengths=(128, 256, 400), depths=(0.0, 0.25, 0.5, 0.75, 1.0)) -> Task:
    """A ``key=value`` record hidden at several depths of KJV prose of several token lengths."""
    rng = random.Random(seed)
    words = _haystack().split(" ")
    examples = []
    for i in range(n):
        length, depth = lengths[i % len(lengths)], depths[(i // len(lengths)) % len(depths)]
        start = rng.randrange(0, len(words) - 2000)
        prose = " ".join(words[start:start + int(length * 0.75)])
        ids = tokenizer(prose, add_special_tokens=False)["input_ids"][:length]
        prose = tokenizer.decode(ids)
        cut = int(len(prose) * depth)
        cut = prose.rfind(" ", 0, cut) if 0 < cut < len(prose) else cut
        key, value = rng.choice(WORDS), str(rng.randrange(10, 1000))
        needle = f"Records: {key}={value}."
        prompt = f"{prose[:max(cut, 0)]} {needle} {prose[max(cut, 0):]}\nQuery: {key}?\nAnswer:"
        examples.append(EvalExample(prompt, [f" {value}"], {"emphasis": needle, "instruction": f"Query: {key}?"},
                                    bucket=f"len {length} / depth {int(depth * 100)}%"))
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples], max_tokens)
    fitting = [l for l in lengths if l + 24 <= (max_tokens or 10 ** 9)]
    _check_budget("needle", longest, max_tokens, f"use --lengths up to {max(fitting) if fitting else 'a smaller value'}")
    return Task("needle", examples, "exact", {"lengths": list(lengths), "depths": list(depths), "n": n, "seed": seed})


def override_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, distractors: int = 3) -> Task:
    """CounterFact-style override; correct when the new value is more likely than the old one."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        ex = override(rng, distractors)
        examples.append(EvalExample(ex["prompt"], [ex["answer"]], {"emphasis": ex["emphasis"]}, wrong=[ex["old"]]))
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples], max_tokens)
    _check_budget("override", longest, max_tokens, "use fewer --distractors")
    return Task("override", examples, "loglik", {"distractors": distractors, "n": n, "seed": seed})


def format_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, filler_tokens: int = 200) -> Task:
    """A format instruction (upper case, lower case, brackets) followed by ``filler_tokens`` of prose."""
    rng = random.Random(seed)
    words = _haystack().split(" ")
    examples = []
    for _ in range(n):
        start = rng.randrange(0, len(words) - 1000)
        ids = tokenizer(" ".join(words[start:start + filler_tokens]), add_special_tokens=False)["input_ids"]
        filler = tokenizer.decode(ids[:filler_tokens])
        ex = format_instruction(rng, filler)
        style = "upper" if "upper" in ex["instruction"] else "lower" if "lower" in ex["instruction"] else "brackets"
        examples.append(EvalExample(ex["prompt"], [ex["answer"]], {"instruction": ex["instruction"]}, bucket=style))
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples], max_tokens)
    _check_budget("format", longest, max_tokens, f"use --filler-tokens {max(0, (max_tokens or 0) - 40)} or fewer")
    return Task("format", examples, "exact", {"filler_tokens": filler_tokens, "n": n, "seed": seed})


def kv_masked_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, pairs: int = 8) -> Task:
    """``kv`` for masked encoders: ``… Query: river? Answer: [MASK].``, scored by the token at the mask."""
    if tokenizer.mask_token is None:
        raise AttnlabError("task 'kv-masked' is for masked encoders (the tokenizer has no mask token); use 'kv'")
    base = kv_task(tokenizer, n, seed, None, pairs)
    examples = [EvalExample(e.prompt + f" {tokenizer.mask_token}.", e.answers, e.spans, e.bucket) for e in base.examples]
    longest = max(len(tokenizer(e.prompt)["input_ids"]) for e in examples)
    _check_budget("kv-masked", longest, max_tokens, "use fewer --pairs")
    return Task("kv-masked", examples, "masked", {"pairs": pairs, "n": n, "seed": seed}, encoder=True)


def read_jsonl(path: str | None, scorer: str = "exact") -> list[EvalExample]:
    """The user's records, one JSON object per line: ``{"prompt": …, "answer": … | "answers": […],
    "spans": {"emphasis": "…"}, "wrong": […]}``; ``<<…>>`` in the prompt marks the ``emphasis`` span.
    A record that is not of that form is refused in one line naming its line number."""
    if path is None:
        raise AttnlabError("task 'jsonl' needs --file PATH to a JSONL file of {prompt, answer} records")
    if scorer not in SCORERS:
        raise AttnlabError(f"unknown scorer '{scorer}': use one of {', '.join(SCORERS)}")
    file = Path(path)
    if not file.is_file():
        raise AttnlabError(f"{path} is not a file: give a JSONL file of {{prompt, answer}} records")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AttnlabError(f"{path} is not UTF-8 text: convert it first (e.g. iconv -t UTF-8)") from None
    examples = [_record(line, f"{path} line {number}", scorer) for number, line in enumerate(lines, 1) if line.strip()]
    if not examples:
        raise AttnlabError(f"{path} holds no records")
    return examples


def _texts(value, where: str, what: str) -> list[str]:
    """``value`` as a non-empty list of strings (one string allowed), else a one-line error."""
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise AttnlabError(f"{where}: {what} must be a non-empty string or list of non-empty strings")
    return value


def _record(line: str, where: str, scorer: str) -> EvalExample:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise AttnlabError(f"{where} is not JSON ({exc.msg})") from None
    if not isinstance(rec, dict) or "prompt" not in rec or not ("answer" in rec or "answers" in rec):
        raise AttnlabError(f"{where}: a record needs 'prompt' and 'answer' (or 'answers')")
    if not isinstance(rec["prompt"], str) or not rec["prompt"].strip():
        raise AttnlabError(f"{where}: 'prompt' must be a non-empty string")
    prompt, marked = strip_markers(rec["prompt"])
    if not isinstance(rec.get("spans", {}), dict):
        raise AttnlabError(f"{where}: 'spans' must map span names to text, like {{\"emphasis\": \"…\"}}")
    spans = {name: _texts(text, where, f"span '{name}'") for name, text in rec.get("spans", {}).items()}
    if marked:
        spans.setdefault("emphasis", [prompt[a:z] for a, z in marked])
    answers = _texts(rec["answers"] if "answers" in rec else rec["answer"], where, "'answers'")
    if scorer == "loglik" and not rec.get("wrong"):
        raise AttnlabError(f"{where}: the loglik scorer needs 'wrong' alternatives to compare with")
    wrong = _texts(rec["wrong"], where, "'wrong'") if rec.get("wrong") else []
    return EvalExample(prompt, answers, spans, str(rec.get("bucket", "all")), wrong)


def jsonl_task(tokenizer, n: int | None, seed: int = 0, max_tokens: int | None = None, path: str | None = None,
               scorer: str = "exact") -> Task:
    """``n`` (all if None) of the records of the JSONL file ``path`` (see :func:`read_jsonl`), shuffled by ``seed``."""
    examples = read_jsonl(path, scorer)
    rng = random.Random(seed)
    rng.shuffle(examples)
    examples = examples[:n] if n else examples
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples], max_tokens)
    _check_budget("jsonl", longest, max_tokens, "shorten the longest prompts")
    return Task("jsonl", examples, scorer, {"path": str(path), "scorer": scorer, "n": len(examples), "seed": seed})


TASKS = {"kv": kv_task, "needle": needle_task, "override": override_task, "format": format_task,
         "kv-masked": kv_masked_task, "jsonl": jsonl_task}


def make_task(name: str, tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, **params) -> Task:
    """Build task ``name`` (see ``TASKS``) with ``n`` examples."""
    if name not in TASKS:
        raise AttnlabError(f"unknown task '{name}': choose from {', '.join(TASKS)}")
    if n is not None and n < 1:
        raise AttnlabError(f"n must be >= 1, got {n}")
    return TASKS[name](tokenizer, n, seed, max_tokens, **params)
