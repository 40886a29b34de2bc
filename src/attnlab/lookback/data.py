"""Labelled replies for the Lookback Lens without an annotator: two tasks whose faithfulness a rule can judge.

The paper (Chuang et al. 2024) labels Llama-2 replies on CNN/DM and Natural Questions with GPT-4o span
annotations. Here the labels come from the tasks themselves:

* ``counterfact``: a short passage states a fact that contradicts world knowledge ("The capital of France is
  Berlin", from ``data/facts.json``); the question asks for it. Faithful iff the reply names the passage's object
  and not the true one; the hallucinated span is the true object where it appears, else the whole reply.
* ``records``: a generated personnel record (names, a city, an employer, numbers); the model writes one sentence
  about it or answers a question on it. Faithful iff every number, every name from the generator's pools and
  every capitalised word inside a sentence of the reply appears in the record; the hallucinated spans are the
  ones that do not.

Replies are generated greedily and by sampling (so both classes occur), labelled per token, and cached as JSON.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from attnlab.errors import AttnlabError
from attnlab.evals.paper_tasks import load_data
from attnlab.lookback.probe import generate_with_ratios, lookback_prompt

TASKS = ("counterfact", "records")
INSTRUCTION = "Answer the question in one sentence, using only the context."
FIRST = ["Maria", "James", "Aisha", "Tomasz", "Elena", "Kofi", "Priya", "Lucas", "Mei", "Omar", "Sofia", "Daniel",
         "Ingrid", "Rafael", "Yuki", "Grace", "Mateo", "Leila", "Henrik", "Chloe", "Samuel", "Nadia", "Victor", "Hana"]
LAST = ["Lopez", "Okafor", "Novak", "Chen", "Haddad", "Schmidt", "Patel", "Moreau", "Tanaka", "Silva", "Brennan",
        "Kowalski", "Mensah", "Larsen", "Ibrahim", "Rossi", "Dubois", "Nakamura", "Fischer", "Alvarez"]
CITIES = ["Denver", "Leeds", "Porto", "Tampere", "Graz", "Adelaide", "Halifax", "Bergen", "Lyon", "Kraków",
          "Accra", "Osaka", "Valencia", "Tucson", "Dresden"]
EMPLOYERS = ["Northwind Labs", "Bluepeak Foods", "Orchard Analytics", "Copperline Rail", "Silverfin Bank",
             "Maple Health", "Quarry Studios", "Harbor Logistics", "Juniper Energy", "Lumen Textiles"]
ROLES = ["accountant", "nurse", "engineer", "designer", "chemist", "teacher", "pilot", "librarian", "analyst"]
PASSAGES = {
    "capital": "{S} has a long history and a varied landscape. {fact}. Most visitors to {S} begin their trip in {O}.",
    "language": "{S} has a rich culture. {fact}. Schools and newspapers in {S} use {O}.",
    "continent": "{S} is a large and diverse country. {fact}. Maps of {O} always show {S}.",
}
RECORD_QUESTIONS = ["Write one sentence about {name} using only the record.",
                    "How old is {name}, and where does {name} work?",
                    "Where does {name} live, and who is {name}'s manager?",
                    "When did {name} join {employer}, and how large is the team?"]


@dataclass
class Example:
    """One prompt: its id and split group, the user's text, and what its labeller needs."""

    id: int
    group: int
    task: str
    text: str
    answer: str = ""
    parametric: str = ""
    source: str = ""


@dataclass
class Label:
    """Whether a reply is faithful, and the character ranges of the reply judged hallucinated."""

    faithful: bool
    bad: list = field(default_factory=list)


def context_message(context: str, question: str) -> str:
    """The user's message for a context and a question (every task's wording, and the command line's); the paper
    (Chuang et al. 2024) prompts "Answer the question based on the information in the document" in its own words."""
    return f"{INSTRUCTION}\n\nContext: {context}\n\nQuestion: {question}"


def counterfact_examples(seed: int = 0, per_fact: int = 2) -> list[Example]:
    """Two counterfactual versions of each fact of ``data/facts.json`` (another object of the same relation): the
    stand-in for the paper's Natural Questions task (Chuang et al. 2024), with the answer set against world
    knowledge."""
    data = load_data("facts")
    rng = random.Random(seed)
    examples = []
    for group, fact in enumerate(data["facts"]):
        rel = data["relations"][fact["relation"]]
        pool = sorted({f["object"] for f in data["facts"] if f["relation"] == fact["relation"]} - {fact["object"]})
        for k, obj in enumerate(rng.sample(pool, per_fact)):
            statement = rel["present"].format(s=fact["subject"], o=obj)
            passage = PASSAGES[fact["relation"]].format(S=fact["subject"], O=obj,
                                                        fact=statement[0].upper() + statement[1:])
            question = rel["question" if k % 2 == 0 else "paraphrase"].format(s=fact["subject"])
            examples.append(Example(len(examples), group, "counterfact", context_message(passage, question),
                                    answer=obj, parametric=fact["object"]))
    return examples


def records_examples(n: int = 100, seed: int = 0) -> list[Example]:
    """``n`` generated personnel records, each with one question or a request for a one-sentence summary: the
    stand-in for the paper's CNN/DM summaries (Chuang et al. 2024), small enough to check every name and number."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        first, manager_first = rng.sample(FIRST, 2)
        last, manager_last = rng.sample(LAST, 2)
        name, employer = f"{first} {last}", rng.choice(EMPLOYERS)
        record = (f"Name: {name}. Age: {rng.randint(23, 64)}. City: {rng.choice(CITIES)}. Employer: {employer}. "
                  f"Role: {rng.choice(ROLES)}. Joined: {rng.randint(1995, 2022)}. Team size: {rng.randint(3, 40)}. "
                  f"Manager: {manager_first} {manager_last}.")
        question = RECORD_QUESTIONS[i % len(RECORD_QUESTIONS)].format(name=name, employer=employer)
        examples.append(Example(i, i, "records", context_message(record, question), source=record))
    return examples


def _find_all(text: str, word: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"(?<!\w)" + re.escape(word) + r"(?!\w)", text, flags=re.IGNORECASE)]


def label_counterfact(reply: str, answer: str, parametric: str) -> Label:
    """Faithful iff ``reply`` names the context's ``answer`` and not the ``parametric`` (true-world) one; a rule in
    place of the paper's GPT-4o annotation (Chuang et al. 2024).

    The hallucinated span is every mention of ``parametric``; a reply naming neither is hallucinated as a whole.
    """
    wrong = _find_all(reply, parametric)
    if _find_all(reply, answer) and not wrong:
        return Label(True)
    return Label(False, wrong or [(0, len(reply))])


NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
CAPITALISED = re.compile(r"\b[A-Z][\w'-]*")
POOL_NAMES = set(FIRST) | set(LAST) | set(CITIES) | {w for e in EMPLOYERS for w in e.split()}


def label_record(reply: str, source: str) -> Label:
    """Faithful iff every number and name in ``reply`` appears in ``source``; the ones that do not are the spans (a
    rule in place of the paper's GPT-4o span annotation, Chuang et al. 2024).

    Numbers are compared without thousands separators; names are the generator's own (people, cities,
    employers) anywhere in the reply, and any capitalised word inside a sentence (not its first word) that is
    not a word of the source (case aside). Numbers written as words and names at a sentence's start outside
    the pools go unchecked.
    """
    numbers = {n.replace(",", "") for n in NUMBER.findall(source)}
    words = {w.lower() for w in re.findall(r"[\w'-]+", source)}
    bad = [m.span() for m in NUMBER.finditer(reply) if m.group().replace(",", "").rstrip(".") not in numbers]
    for m in CAPITALISED.finditer(reply):
        word = m.group().split("'")[0]
        before = reply[:m.start()].rstrip()
        inside = bool(before) and before[-1] not in ".!?:\"*"
        if word.lower() not in words and (word in POOL_NAMES or inside and word != "I"):
            bad.append(m.span())
    return Label(not bad, sorted(bad))


def label(example: Example, reply: str) -> Label:
    """The task's labeller (in place of the Lookback Lens paper's annotator) applied to ``reply``."""
    if example.task == "counterfact":
        return label_counterfact(reply, example.answer, example.parametric)
    return label_record(reply, example.source)


def token_labels(tokenizer, reply_ids: list[int], judged: Label) -> tuple[str, list[int]]:
    """The reply's text and one label per token: 0 where a token overlaps a hallucinated range, else 1 (the
    paper's ``sequential_labels``, Chuang et al. 2024).

    Token ``i``'s characters are where decoding ``ids[:i + 1]`` extends decoding ``ids[:i]`` (special tokens
    such as the end of turn add none and keep label 1).
    """
    ends = [len(tokenizer.decode(reply_ids[:i + 1], skip_special_tokens=True)) for i in range(len(reply_ids))]
    starts = [0] + ends[:-1]
    labels = [0 if any(s < e2 and e > s2 for s2, e2 in judged.bad) else 1 for s, e in zip(starts, ends)]
    return tokenizer.decode(reply_ids, skip_special_tokens=True), labels


def examples_for(task: str, n: int, seed: int) -> list[Example]:
    """The first ``n`` examples of ``task`` (counterfact: at most two per fact of ``data/facts.json``), for the
    Lookback Lens data."""
    if task == "counterfact":
        return counterfact_examples(seed)[:n]
    if task == "records":
        return records_examples(n, seed)
    raise AttnlabError(f"unknown task '{task}': choose {' or '.join(TASKS)}")


def split_groups(groups, test: float = 0.2, seed: int = 0) -> set:
    """The groups held out for testing: a ``test`` share of the distinct groups, drawn with ``seed`` (the paper,
    Chuang et al. 2024, splits spans 80/20 at random; here whole examples, so no example is on both sides)."""
    distinct = sorted(set(groups))
    random.Random(seed).shuffle(distinct)
    return set(distinct[:max(1, round(test * len(distinct)))])


def build(model, tokenizer, task: str, *, n: int, samples: int = 2, max_new_tokens: int = 24,
          temperature: float = 1.0, top_p: float = 0.95, seed: int = 0, batch_size: int = 8, cache: Path | None = None,
          model_name: str = "", on_progress=None) -> dict:
    """Generate, label and cache replies for the Lookback Lens (Chuang et al. 2024): one greedy and ``samples``
    sampled (the paper's temperature 0.9, top-p 0.95 by default) per example.

    Returns ``{"settings": ..., "examples": [...], "items": [...]}``; each item holds the prompt's ids and context
    end, the reply's ids and text, the example it answers, how it was decoded, its label and its token labels.
    A cache file written with the same settings is read back instead of generating again. The lookback ratios
    measured while generating are not kept: :func:`attnlab.lookback.probe.teacher_forced` gives the same numbers
    together with the baselines' inputs.
    """
    import torch

    settings = {"model": model_name, "task": task, "n": n, "samples": samples, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "top_p": top_p, "seed": seed}
    path = None if cache is None else Path(cache) / f"{task}.json"
    if path is not None and path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("settings") == settings:
            return stored
    examples = examples_for(task, n, seed)
    prompts = [lookback_prompt(tokenizer, e.text) for e in examples]
    modes = ["greedy"] + [f"sample{k}" for k in range(1, samples + 1)]
    items = []
    for mode_index, mode in enumerate(modes):
        torch.manual_seed(seed * 1000 + mode_index)
        for first in range(0, len(examples), batch_size):
            batch = list(range(first, min(first + batch_size, len(examples))))
            replies = generate_with_ratios(model, tokenizer, [prompts[i] for i in batch], max_new_tokens,
                                           sample=mode != "greedy", temperature=temperature, top_p=top_p)
            for i, (ids, _) in zip(batch, replies):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                judged = label(examples[i], text)
                _, per_token = token_labels(tokenizer, ids, judged)
                items.append({"example": i, "group": examples[i].group, "mode": mode,
                              "prompt_ids": list(prompts[i].ids), "context_end": prompts[i].context_end,
                              "reply_ids": ids, "reply": text, "faithful": judged.faithful, "bad": judged.bad,
                              "token_labels": per_token})
            if on_progress:
                on_progress(len(batch))
    data = {"settings": settings, "examples": [asdict(e) for e in examples], "items": items}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return data
