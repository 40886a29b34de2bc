"""Evaluation tasks: seeded, deterministic generators of prompts, answers and the spans a method acts on.

Every generator takes the tokenizer, the number of examples, a seed and a token budget (``max_tokens``,
by default the model's positions) and refuses, with the largest setting that fits, a request whose
prompts would not fit. Prompts are the user's message; the harness renders them in the chat template
when the model has one. ``kv``, ``needle``, ``classify`` and ``choice`` word the prompt for the form they
are asked in (``chat``; by default chat form when the tokenizer has a template); the plain formats follow
:mod:`attnlab.models.synthetic`, which the bundled model was trained on. PASTA's and IFEval's tasks are in
:mod:`attnlab.evals.paper_tasks`.

| task | what is asked | spans | scorer | buckets |
| --- | --- | --- | --- | --- |
| ``kv`` | key-value lookup among distractors | ``emphasis`` = the relevant pair, ``instruction`` = the question | chat: number; plain: exact | position of the pair (lost in the middle) |
| ``needle`` | a ``key=value`` record hidden in prose | ``emphasis`` = the needle | chat: number; plain: exact | depth x length |
| ``classify`` | sentiment or topic of a short text | ``emphasis`` = the text, ``instruction`` = the question | labels | gold label |
| ``choice`` | four-option multiple choice on general knowledge | ``emphasis`` = the question, ``instruction`` | labels | category |
| ``override`` | "Previously X, but now Y" (CounterFact) | ``emphasis`` = the new fact | new answer more likely than old (PASTA's efficacy score) | -- |
| ``format`` | a format instruction before long prose | ``instruction`` = the instruction | exact | style |
| ``kv-masked`` | ``kv`` for encoders: the value is ``[MASK]`` | as ``kv`` | argmax at the mask | position |
| ``jsonl`` | the user's records ``{prompt, answer(s), spans, meta}`` | the record's | exact / loglik / labels / a reply scorer | -- |
"""
from __future__ import annotations

import inspect
import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from itertools import product
from pathlib import Path

from attnlab.errors import AttnlabError
from attnlab.evals.paper_tasks import PAPER_TASKS
from attnlab.evals.scorers import TEACHER_FORCED, get_reply_scorer
from attnlab.models.synthetic import WORDS, format_instruction, kv_retrieval, override
from attnlab.spans import chat_wrap, has_chat_template, strip_markers



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
    chat: bool | None = None   # written as a chat turn (True), as plain text (False), or for either form (None)


def _fits(tokenizer, prompts_answers, chat: bool = False) -> int:
    """The most tokens a prompt and its answer take, in the chat template if ``chat``."""
    if chat:
        return max(len(tokenizer(chat_wrap(tokenizer, p)[0] + a, add_special_tokens=False)["input_ids"])
                   for p, a in prompts_answers)
    return max(len(tokenizer(p + a)["input_ids"]) for p, a in prompts_answers)


def _check_budget(name: str, longest: int, max_tokens: int | None, hint: str) -> None:
    if max_tokens is not None and longest > max_tokens:
        raise AttnlabError(f"task '{name}' makes prompts of {longest} tokens but the model takes at most "
                           f"{max_tokens}: {hint}")


def kv_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, pairs: int = 16,
            absent: bool = False, chat: bool | None = None) -> Task:
    """Key-value retrieval with the relevant pair's position swept evenly over the records (Liu et al. 2023,
    "Lost in the Middle"; PASTA and SpotLight emphasise the relevant record).

    In chat form (``chat``, by default when the tokenizer has a chat template) the records are followed by a
    question and "Answer with the number only.", scored by the first number of the reply; in plain form the
    bundled model's ``Query: key?`` / ``Answer:`` format, scored by greedy exact match.
    """
    if pairs < 1 or pairs > len(WORDS) - 1:
        raise AttnlabError(f"pairs must be between 1 and {len(WORDS) - 1}, got {pairs}")
    chat = has_chat_template(tokenizer) if chat is None else chat
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        position = i % pairs
        ex = kv_retrieval(rng, pairs, query_index=position)
        value = ex["answer"].strip()
        pair = f"{ex['query']}={value}."
        bucket = f"{int(5 * position / pairs) * 20}-{int(5 * position / pairs) * 20 + 20}%"
        if chat:
            question = f"What is the value of {ex['query']} in the records? {NUMBER_ONLY}"
            records = ex["prompt"].partition("\n")[0]
            examples.append(EvalExample(f"{records}\n{question}", [value], {"emphasis": pair, "instruction": question},
                                        bucket=bucket))
        else:
            examples.append(EvalExample(ex["prompt"], [ex["answer"]], {"emphasis": pair,
                                                                      "instruction": f"Query: {ex['query']}?"},
                                        bucket=bucket))
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples], chat)
    if max_tokens is not None and longest > max_tokens:
        per_pair = longest / pairs
        raise AttnlabError(f"task 'kv' with {pairs} pairs makes prompts of {longest} tokens but the model takes at "
                           f"most {max_tokens}: use --pairs {max(1, int((max_tokens - 12) / per_pair))} or fewer")
    return _form(Task("kv", examples, "exact", {"pairs": pairs, "n": n, "seed": seed}), chat)


NUMBER_ONLY = "Answer with the number only."
CHAT_REPLY_TOKENS = 16   # a number and a few words around it
SKIPPED_LISTED = 20      # malformed JSONL records named in a sharded evaluation's report (all are counted)


def _form(task: Task, chat: bool) -> Task:
    """``task`` (written in plain form) marked with its form; in chat form scored by the reply's first number."""
    if not chat:
        task.chat = False
        return task
    task.chat, task.scorer = True, "number"
    task.params.update(chat=True, max_new_tokens=CHAT_REPLY_TOKENS)
    return task


def _haystack() -> str:
    return resources.files("attnlab").joinpath("data/haystack.txt").read_text(encoding="utf-8")


def needle_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None,
                lengths=(128, 256, 400), depths=(0.0, 0.25, 0.5, 0.75, 1.0), chat: bool | None = None) -> Task:
    """A ``key=value`` record hidden at several depths of KJV prose of several token lengths (needle in a
    haystack, as SpotLight and PASTA's long-context retrieval).

    In chat form (``chat``, by default when the tokenizer has a chat template) the prose is followed by a
    question and "Answer with the number only.", scored by the first number of the reply; in plain form by
    greedy exact match after ``Query: key?`` / ``Answer:``.
    """
    chat = has_chat_template(tokenizer) if chat is None else chat
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
        haystack = f"{prose[:max(cut, 0)]} {needle} {prose[max(cut, 0):]}"
        bucket = f"len {length} / depth {int(depth * 100)}%"
        if chat:
            question = f"The text above holds one record. What is the number of the key {key}? {NUMBER_ONLY}"
            examples.append(EvalExample(f"{haystack.strip()}\n\n{question}", [value],
                                        {"emphasis": needle, "instruction": question}, bucket=bucket))
        else:
            examples.append(EvalExample(f"{haystack}\nQuery: {key}?\nAnswer:", [f" {value}"],
                                        {"emphasis": needle, "instruction": f"Query: {key}?"}, bucket=bucket))
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples], chat)
    overhead = longest - max(lengths)
    fitting = [l for l in lengths if l + overhead <= (max_tokens or 10 ** 9)]
    _check_budget("needle", longest, max_tokens, f"use --lengths up to {max(fitting) if fitting else 'a smaller value'}")
    return _form(Task("needle", examples, "exact", {"lengths": list(lengths), "depths": list(depths), "n": n,
                                                     "seed": seed}), chat)


def override_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, distractors: int = 3) -> Task:
    """CounterFact-style override; correct when the new value is more likely than the old one."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        ex = override(rng, distractors)
        examples.append(EvalExample(ex["prompt"], [ex["answer"]], {"emphasis": ex["emphasis"]}, wrong=[ex["old"]]))
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples])
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
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples])
    _check_budget("format", longest, max_tokens, f"use --filler-tokens {max(0, (max_tokens or 0) - 40)} or fewer")
    return Task("format", examples, "exact", {"filler_tokens": filler_tokens, "n": n, "seed": seed})


def kv_masked_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, pairs: int = 8) -> Task:
    """``kv`` for masked encoders: ``… Query: river? Answer: [MASK].``, scored by the token at the mask."""
    if tokenizer.mask_token is None:
        raise AttnlabError("task 'kv-masked' is for masked encoders (the tokenizer has no mask token); use 'kv'")
    base = kv_task(tokenizer, n, seed, None, pairs, chat=False)
    examples = [EvalExample(e.prompt + f" {tokenizer.mask_token}.", e.answers, e.spans, e.bucket) for e in base.examples]
    longest = max(len(tokenizer(e.prompt)["input_ids"]) for e in examples)
    _check_budget("kv-masked", longest, max_tokens, "use fewer --pairs")
    return Task("kv-masked", examples, "masked", {"pairs": pairs, "n": n, "seed": seed}, encoder=True)


def _data(name: str) -> dict:
    return json.loads(resources.files("attnlab").joinpath(f"data/{name}").read_text(encoding="utf-8"))


def _filled(template: str, slots: dict) -> list[str]:
    """Every text ``template`` gives with its ``{slot}`` s filled from ``slots``, in a fixed order."""
    names = list(dict.fromkeys(re.findall(r"{(\w+)}", template)))
    return [template.format(**dict(zip(names, values))) for values in product(*(slots[n] for n in names))]


def _classify_items(kind: str, spec: dict) -> dict[str, list[str]]:
    """label -> every text of that label for ``kind`` (``sentiment``: subject + phrase; ``topic``: templates)."""
    if kind == "sentiment":
        return {label: [f"{subject} {phrase}" for subject in spec["subjects"] for phrase in spec["phrases"][label]]
                for label in spec["labels"]}
    return {label: [text for t in spec["templates"][label] for text in _filled(t, spec["slots"])]
            for label in spec["labels"]}


CLASSIFY_QUESTIONS = {"sentiment": ("Is the sentiment of this review positive or negative?", "Review"),
                      "topic": ("Which topic is this text about: sports, food, weather or animals?", "Text")}


def classify_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None,
                  kinds=("sentiment", "topic"), chat: bool | None = None) -> Task:
    """Zero-shot classification over a fixed label set, scored by label words (ZeroTuning, Han et al. 2025;
    ACT, Yu et al. 2024): the gold label must be the most likely of the labels after the prompt.

    Sentiment (positive / negative) and topic (sports / food / weather / animals) of short texts written for
    the project (``data/classify.json``); kinds alternate and labels cycle, so labels are balanced; texts are
    drawn without repeats. Spans: ``emphasis`` = the text, ``instruction`` = the question. In plain form
    (``chat`` False; by default without a chat template) the prompt ends with ``Answer:``; in chat form the
    label is the reply's first word.
    """
    chat = has_chat_template(tokenizer) if chat is None else chat
    data = _data("classify.json")
    unknown = [k for k in kinds if k not in CLASSIFY_QUESTIONS]
    if unknown or not kinds:
        raise AttnlabError(f"unknown classification kind '{unknown[0] if unknown else ''}': use sentiment, topic")
    rng = random.Random(seed)
    pools = {}
    for kind in kinds:
        for label, texts in _classify_items(kind, data[kind]).items():
            pools[kind, label] = rng.sample(texts, len(texts))
    examples = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        labels = data[kind]["labels"]
        label = labels[(i // len(kinds)) % len(labels)]
        if not pools[kind, label]:
            raise AttnlabError(f"task 'classify' holds {i} balanced distinct texts of these kinds: use --n {i} or "
                               "fewer")
        text = pools[kind, label].pop()
        question, noun = CLASSIFY_QUESTIONS[kind]
        examples.append(EvalExample(f"{question}\n{noun}: {text}" + ANSWER_CUE[chat], [label],
                                    {"emphasis": text, "instruction": question}, bucket=label,
                                    meta={"labels": list(labels)}))
    longest = _fits(tokenizer, [(e.prompt, " " + e.answers[0]) for e in examples], chat)
    _check_budget("classify", longest, max_tokens, "the texts are short: the model's context is too small")
    return Task("classify", examples, "labels", {"kinds": list(kinds), "n": n, "seed": seed, "chat": chat},
                chat=chat)


ANSWER_CUE = {False: "\nAnswer:", True: ""}   # plain form cues the answer; in chat form the reply starts it
LETTERS = ("A", "B", "C", "D")
CHOICE_INSTRUCTIONS = {"option": "Answer with the correct option.",
                       "letter": "Answer with the letter of the correct option."}


def _choice_questions(rng: random.Random, category: str, spec: dict) -> list[tuple[str, str, list[str]]]:
    """``(question, right answer, three wrong answers)`` of one category, shuffled by ``rng``.

    Facts are asked once each (opposites both ways); arithmetic adds two numbers from 2 to 49, its wrong
    options one and ten away from the sum.
    """
    if category == "arithmetic":
        pairs = rng.sample([(a, b) for a in range(2, 50) for b in range(2, 50)], 400)
        return [(spec["question"].format(a, b), str(a + b), [str(a + b + d) for d in rng.sample((-10, -1, 1, 10), 3)])
                for a, b in pairs]
    facts = [tuple(f) for f in spec["facts"]]
    if category == "opposite":
        facts += [(b, a) for a, b in facts]
    options = spec.get("options") or sorted({answer for _, answer in facts})
    out = []
    for subject, answer in rng.sample(facts, len(facts)):
        wrong = rng.sample([o for o in options if o not in (answer, subject)], 3)
        out.append((spec["question"].format(subject), answer, wrong))
    return out


def choice_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None,
                categories=("arithmetic", "colour", "opposite", "capital"), answer: str = "option",
                chat: bool | None = None) -> Task:
    """Four-option multiple choice (options lettered A-D) over general knowledge a small model mostly knows,
    scored by label likelihood as ZeroTuning (Han et al. 2025) and ACT (Yu et al. 2024) evaluate it.

    ``answer="option"`` (default) scores the four option texts, ``"letter"`` the letters A-D (MMLU-style;
    SmolLM2-135M picks letters at chance, so small models are measured on the options). Categories take turns
    (one that has run out of facts drops out; arithmetic never does); the right option's place is balanced
    over A-D. Facts in ``data/choice.json``, written for the project. Spans: ``emphasis`` = the question,
    ``instruction`` = the answer instruction. Plain form (``chat`` False) ends the prompt with ``Answer:``.
    """
    if answer not in CHOICE_INSTRUCTIONS:
        raise AttnlabError(f"unknown answer kind '{answer}' for task 'choice': use option or letter")
    chat = has_chat_template(tokenizer) if chat is None else chat
    data = _data("choice.json")
    unknown = [c for c in categories if c not in data or c == "about"]
    if unknown or not categories:
        raise AttnlabError(f"unknown category '{unknown[0] if unknown else ''}': use arithmetic, colour, opposite, "
                           "capital")
    rng = random.Random(seed)
    queues = {c: _choice_questions(rng, c, data[c]) for c in categories}
    letters = [i % len(LETTERS) for i in range(n)]
    rng.shuffle(letters)
    examples = []
    for i in range(n):
        open_ = [c for c in categories if queues[c]]
        if not open_:
            raise AttnlabError(f"task 'choice' holds {i} questions in these categories: use --n {i} or fewer")
        category = open_[i % len(open_)]
        question, right, wrong = queues[category].pop()
        options = wrong[:letters[i]] + [right] + wrong[letters[i]:]
        lines = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options))
        instruction = CHOICE_INSTRUCTIONS[answer]
        labels = list(LETTERS) if answer == "letter" else options
        gold = labels[letters[i]]
        examples.append(EvalExample(f"{question}\n{lines}\n{instruction}" + ANSWER_CUE[chat], [gold],
                                    {"emphasis": question, "instruction": instruction}, bucket=category,
                                    meta={"labels": labels}))
    longest = _fits(tokenizer, [(e.prompt, " " + e.answers[0]) for e in examples], chat)
    _check_budget("choice", longest, max_tokens, "the questions are short: the model's context is too small")
    return Task("choice", examples, "labels", {"categories": list(categories), "answer": answer, "n": n,
                                               "seed": seed, "chat": chat}, chat=chat)


def read_jsonl(path: str | None, scorer: str = "exact", skipped: list | None = None) -> list[EvalExample]:
    """The user's records, one JSON object per line: ``{"prompt": …, "answer": … | "answers": […],
    "spans": {"emphasis": "…"}, "wrong": […], "meta": {…}}``; ``<<…>>`` in the prompt marks the ``emphasis``
    span; ``meta`` holds the scorer's parameters (``labels``, a ``pattern``, a JSON ``key``).
    A record that is not of that form is refused in one line naming its line number -- or, when a ``skipped``
    list is given (a large file evaluated in shards), appended to it as ``{"line", "reason"}`` and left out."""
    if path is None:
        raise AttnlabError("task 'jsonl' needs --file PATH to a JSONL file of {prompt, answer} records")
    if scorer not in TEACHER_FORCED:
        get_reply_scorer(scorer)
    file = Path(path)
    if not file.is_file():
        raise AttnlabError(f"{path} is not a file: give a JSONL file of {{prompt, answer}} records")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AttnlabError(f"{path} is not UTF-8 text: convert it first (e.g. iconv -t UTF-8)") from None
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            examples.append(_record(line, where, scorer))
        except AttnlabError as exc:
            if skipped is None:
                raise
            skipped.append({"line": number, "reason": str(exc).removeprefix(where).lstrip(": ")})
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
    if not isinstance(rec.get("meta", {}), dict):
        raise AttnlabError(f"{where}: 'meta' must be an object of the scorer's parameters, like {{\"labels\": […]}}")
    if scorer == "labels" and answers[0] not in rec.get("meta", {}).get("labels", []):
        raise AttnlabError(f"{where}: the labels scorer needs 'meta': {{\"labels\": […]}} holding the answer")
    return EvalExample(prompt, answers, spans, str(rec.get("bucket", "all")), wrong, rec.get("meta", {}))


def jsonl_task(tokenizer, n: int | None, seed: int = 0, max_tokens: int | None = None, path: str | None = None,
               scorer: str = "exact", skip_bad: bool = False) -> Task:
    """``n`` (all if None) of the records of the JSONL file ``path`` (see :func:`read_jsonl`), shuffled by ``seed``.
    With ``skip_bad`` a malformed record is left out and counted (``params["skipped_lines"]``, the first 20 named
    in ``params["skipped"]``) instead of refusing the file."""
    skipped = [] if skip_bad else None
    examples = read_jsonl(path, scorer, skipped)
    rng = random.Random(seed)
    rng.shuffle(examples)
    examples = examples[:n] if n else examples
    longest = _fits(tokenizer, [(e.prompt, e.answers[0]) for e in examples])
    _check_budget("jsonl", longest, max_tokens, "shorten the longest prompts")
    params = {"path": str(path), "scorer": scorer, "n": len(examples), "seed": seed}
    if skipped is not None:
        params.update(skipped_lines=len(skipped), skipped=skipped[:SKIPPED_LISTED])
    return Task("jsonl", examples, scorer, params)


TASKS = {"kv": kv_task, "needle": needle_task, "override": override_task, "format": format_task,
         "kv-masked": kv_masked_task, "jsonl": jsonl_task, "classify": classify_task, "choice": choice_task,
         **PAPER_TASKS}


def make_task(name: str, tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, **params) -> Task:
    """Build task ``name`` (see ``TASKS``) with ``n`` examples; ``chat`` (in ``params``) reaches only the tasks
    whose wording depends on the form they are asked in (``kv``, ``needle``)."""
    if name not in TASKS:
        raise AttnlabError(f"unknown task '{name}': choose from {', '.join(TASKS)}")
    chat = params.pop("chat", None)
    if chat is not None and "chat" in inspect.signature(TASKS[name]).parameters:
        params["chat"] = chat
    if n is not None and n < 1:
        raise AttnlabError(f"n must be >= 1, got {n}")
    return TASKS[name](tokenizer, n, seed, max_tokens, **params)
