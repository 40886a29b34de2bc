"""The steering papers' own kinds of task, written as the user's message of a chat (plain text, no template).

PASTA's four (Zhang et al. 2024, "Tell Your Model Where to Attend") are built from the fictional biographies of
``data/bios.json`` (84 people, 10 occupations) and the facts of ``data/facts.json``; IFEval-style instruction
following (Zhou et al. 2023), as InstABoost (Guardieiro et al. 2025) and SpotLight (Venkateswaran & Contractor
2025) evaluate it, from the requests and constraints of ``data/ifeval.json`` around KJV prose
(``data/haystack.txt``). Every generator is deterministic in its seed and refuses, with the largest setting that
fits, prompts (rendered in the chat template when the tokenizer has one, reply included) longer than
``max_tokens``.

| task | what is asked | spans | scorer (metrics) | buckets |
| --- | --- | --- | --- | --- |
| ``json-format`` | a biography, then the occupation as JSON ``{"occupation": "..."}`` | ``emphasis`` = ``instruction`` = the instruction | ``json`` (prediction, format) | pronoun |
| ``pronouns`` | a biography, rewritten with they/them | ``emphasis`` = ``instruction`` = the instruction | ``pronouns`` (changed, no she/he) | pronoun |
| ``biasbios`` | the occupation, named in the first sentence only, later sentences naming others | ``emphasis`` = the first sentence, ``instruction`` = the question | ``labels`` over the 10 occupations | pronoun |
| ``counterfact`` | "Previously X was A, but now X is B." and a question on X | ``emphasis`` = the new fact, ``instruction`` = the question | ``loglik``: B more likely than A (efficacy) | ``efficacy`` / ``paraphrase`` question |
| ``ifeval`` | a request on a passage plus one verifiable constraint, before or after the passage | ``instruction`` = ``emphasis`` = the constraint | ``ifeval`` (strict, loose) | constraint / position |
"""
from __future__ import annotations

import json
import random
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from attnlab.errors import AttnlabError
from attnlab.evals.constraints import CONSTRAINTS
from attnlab.spans import chat_wrap, has_chat_template

if TYPE_CHECKING:   # imported where used: evals/tasks.py imports this module for its TASKS table
    from attnlab.evals.tasks import EvalExample, Task

JSON_INSTRUCTION = 'What is the person\'s occupation? Answer in JSON format like {"occupation": "..."}.'
PRONOUN_INSTRUCTION = ('Rewrite the text, replacing she/he with they/them. For example, "She paints. Her work sells." '
                       'becomes "They paint. Their work sells."')   # SmolLM2-135M changed none without the example
OCCUPATION_QUESTION = "What is the person's occupation? Answer with one word."
JSON_REPLY_TOKENS = 48   # room for a fenced object with a field or two more than asked
MAX_DISTRACTOR = 4000   # tokens of KJV prose a passage may take (haystack.txt holds about 9000)


@lru_cache(maxsize=None)
def load_data(name: str) -> dict:
    """The JSON table ``data/<name>.json`` shipped with attnlab (see ``data/README.md``)."""
    return json.loads(resources.files("attnlab").joinpath(f"data/{name}.json").read_text(encoding="utf-8"))


def prompt_tokens(tokenizer, text: str) -> int:
    """Tokens of the user message ``text`` as the model reads it: in its chat template when it has one."""
    if has_chat_template(tokenizer):
        return len(tokenizer(chat_wrap(tokenizer, text)[0], add_special_tokens=False)["input_ids"])
    return len(tokenizer(text)["input_ids"])


def fit_budget(name: str, option: str, value: int, candidates: range, build, tokenizer, max_tokens: int | None,
               reply_tokens) -> list[EvalExample]:
    """``build(value)``'s examples if their longest prompt plus ``reply_tokens(value)`` fits ``max_tokens``; else a
    one-line refusal naming the largest of ``candidates`` (ascending settings, prompts growing with them) that
    fits, found by bisection."""
    examples = build(value)

    def need(setting, exs):
        return max(prompt_tokens(tokenizer, e.prompt) for e in exs) + reply_tokens(setting)

    longest = need(value, examples)
    if max_tokens is None or longest <= max_tokens:
        return examples
    smaller = [v for v in candidates if v < value]
    fit, unfit = 0, len(smaller)          # smaller[:fit] fit, smaller[unfit:] do not
    while fit < unfit:
        mid = (fit + unfit) // 2
        fit, unfit = (mid + 1, unfit) if need(smaller[mid], build(smaller[mid])) <= max_tokens else (fit, mid)
    hint = (f"use --{option} {smaller[fit - 1]} or fewer" if fit
            else "no setting fits: use a model that takes longer prompts")
    raise AttnlabError(f"task '{name}' makes prompts of {longest} tokens (reply included) but the model takes at "
                       f"most {max_tokens}: {hint}")


def draw(rng: random.Random, items: list, n: int) -> list:
    """``n`` of ``items`` in passes of fresh shuffles, so none repeats before all have been used."""
    out = []
    while len(out) < n:
        out += rng.sample(items, len(items))
    return out[:n]


def with_article(noun: str) -> str:
    """``noun`` with its indefinite article: "a nurse", "an architect"."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def pronoun_forms(pronoun: str) -> dict[str, str]:
    """The placeholders of ``bios.json`` (``{Subj}``, ``{subj}``, ``{Poss}``, ``{poss}``, ``{obj}``) for she / he."""
    subj, poss, obj = ("she", "her", "her") if pronoun == "she" else ("he", "his", "him")
    return {"Subj": subj.capitalize(), "subj": subj, "Poss": poss.capitalize(), "poss": poss, "obj": obj}


def first_sentence(person: dict) -> str:
    """The sentence that names the person's occupation: "Mei Chen is a nurse in Osaka."."""
    return f"{person['name']} is {with_article(person['occupation'])} in {person['city']}."


def biography(rng: random.Random, person: dict, facts: int) -> str:
    """The first sentence and ``facts`` of the person's facts (drawn by ``rng``), pronouns filled in."""
    forms = pronoun_forms(person["pronoun"])
    chosen = rng.sample(person["facts"], facts)
    return " ".join([first_sentence(person)] + [f.format(**forms) for f in chosen])


def _bio_task(name: str, instruction: str, scorer: str, reply_tokens, tokenizer, n: int, seed: int,
              max_tokens: int | None, facts: int, answer: bool, meta) -> Task:
    """A biography of ``facts`` facts per person followed by ``instruction`` (PASTA's JSON and pronoun tasks);
    the occupation is the answer if ``answer``; the scorer gets ``meta(person)``; replies of ``reply_tokens(facts)``."""
    from attnlab.evals.tasks import EvalExample, Task
    limit = len(load_data("bios")["people"][0]["facts"])
    if not 1 <= facts <= limit:
        raise AttnlabError(f"facts must be between 1 and {limit}, got {facts}")

    def build(k):
        rng = random.Random(seed)
        return [EvalExample(f"{biography(rng, p, k)}\n\n{instruction}", [p["occupation"]] if answer else [],
                            {"emphasis": instruction, "instruction": instruction}, bucket=p["pronoun"],
                            meta=meta(p))
                for p in draw(rng, load_data("bios")["people"], n)]

    examples = fit_budget(name, "facts", facts, range(1, facts), build, tokenizer, max_tokens,
                          reply_tokens)
    return Task(name, examples, scorer, {"facts": facts, "n": n, "seed": seed, "max_new_tokens": reply_tokens(facts)})


def json_format_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, facts: int = 3) -> Task:
    """PASTA's JSON formatting (Zhang et al. 2024): a biography, then "What is the person's occupation? Answer in
    JSON format like {"occupation": "..."}"; primary ``prediction`` (the field equals the occupation), secondary
    ``format`` (a JSON object was found)."""
    return _bio_task("json-format", JSON_INSTRUCTION, "json", lambda _: JSON_REPLY_TOKENS, tokenizer, n, seed,
                     max_tokens, facts, True, lambda p: {"key": "occupation"})


def pronouns_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, facts: int = 3) -> Task:
    """PASTA's pronoun changing (Zhang et al. 2024): a biography with she / he, then "Rewrite the text, replacing
    she/he with they/them"; primary ``changed`` (no gendered pronoun left and they/them used, see
    :func:`attnlab.evals.constraints.score_pronouns`). Replies may run to 40 tokens per fact plus 24."""
    return _bio_task("pronouns", PRONOUN_INSTRUCTION, "pronouns", lambda k: 24 + 40 * k, tokenizer, n, seed, max_tokens,
                     facts, False, lambda p: {"name": p["name"]})


def biasbios_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, distractors: int = 2) -> Task:
    """PASTA's BiasBios (Zhang et al. 2024; De-Arteaga et al. 2019): the first sentence names the occupation, the
    next ``distractors`` sentences name other occupations (a sibling's, a friend's); "What is the person's
    occupation? Answer with one word." is scored by label scoring over the 10 occupations, capitalised as a
    one-word reply starts ("Nurse"): right when the gold one is the most likely reply."""
    from attnlab.evals.tasks import EvalExample, Task
    bios = load_data("bios")
    if not 0 <= distractors <= len(bios["distractors"]):
        raise AttnlabError(f"distractors must be between 0 and {len(bios['distractors'])}, got {distractors}")
    labels = [o.capitalize() for o in bios["occupations"]]   # a one-word reply starts with a capital letter

    def build(k):
        rng = random.Random(seed)
        examples = []
        for p in draw(rng, bios["people"], n):
            others = rng.sample([o for o in bios["occupations"] if o != p["occupation"]], k)
            forms = pronoun_forms(p["pronoun"])
            lines = [t.format(other=with_article(o), **forms) for t, o in zip(rng.sample(bios["distractors"], k),
                                                                              others)]
            first = first_sentence(p)
            examples.append(EvalExample(" ".join([first] + lines) + f"\n\n{OCCUPATION_QUESTION}",
                                        [p["occupation"].capitalize()],
                                        {"emphasis": first, "instruction": OCCUPATION_QUESTION}, bucket=p["pronoun"],
                                        meta={"labels": labels}))
        return examples

    longest_label = max(len(tokenizer(label, add_special_tokens=False)["input_ids"]) for label in labels)
    examples = fit_budget("biasbios", "distractors", distractors, range(0, distractors), build, tokenizer,
                          max_tokens, lambda _: longest_label)
    return Task("biasbios", examples, "labels", {"distractors": distractors, "n": n, "seed": seed})


def counterfact_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None) -> Task:
    """PASTA's CounterFact (Zhang et al. 2024; Meng et al. 2022) on facts a small model knows: "Previously the
    capital of France was Paris, but now the capital of France is Rome." then the question, or a paraphrase of
    it (bucket ``paraphrase``); right when the answer with the new object is more likely than with the old one
    (efficacy score; paraphrase score on the paraphrase bucket)."""
    from attnlab.evals.tasks import EvalExample, Task
    table = load_data("facts")
    rng = random.Random(seed)
    examples = []
    for i, fact in enumerate(draw(rng, table["facts"], n)):
        rel = table["relations"][fact["relation"]]
        old, subject = fact["object"], fact["subject"]
        new = rng.choice(sorted({f["object"] for f in table["facts"] if f["relation"] == fact["relation"]} - {old}))
        bucket = "efficacy" if i % 2 == 0 else "paraphrase"
        question = rel["question" if bucket == "efficacy" else "paraphrase"].format(s=subject)
        new_fact = "now " + rel["present"].format(s=subject, o=new)
        prompt = f"Previously, {rel['past'].format(s=subject, o=old)}, but {new_fact}. {question}"
        examples.append(EvalExample(prompt, [rel["answer"].format(s=subject, o=new)], {"emphasis": new_fact,
                                    "instruction": question}, bucket=bucket,
                                    wrong=[rel["answer"].format(s=subject, o=old)]))
    longest_answer = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for e in examples
                         for a in e.answers + e.wrong)
    examples = fit_budget("counterfact", "", 0, range(0), lambda _: examples, tokenizer, max_tokens,
                          lambda _: longest_answer)
    return Task("counterfact", examples, "loglik", {"n": n, "seed": seed})


def passage(tokenizer, rng: random.Random, tokens: int) -> str:
    """``tokens`` tokens of KJV prose (``data/haystack.txt``) from a place drawn by ``rng``, cut at a word."""
    from attnlab.evals.tasks import _haystack
    words = _haystack().split()
    start = rng.randrange(0, len(words) - tokens)
    ids = tokenizer(" ".join(words[start:start + tokens]), add_special_tokens=False)["input_ids"][:tokens]
    text = tokenizer.decode(ids)
    return text[:text.rfind(" ")] if " " in text.strip() else text


def ifeval_task(tokenizer, n: int, seed: int = 0, max_tokens: int | None = None, distractor_tokens: int = 300,
                max_new_tokens: int = 160) -> Task:
    """IFEval-style instruction following (Zhou et al. 2023; InstABoost, SpotLight): a request on a passage of
    ``distractor_tokens`` tokens plus one verifiable constraint (``CONSTRAINTS``: upper / lower case, no commas,
    include a word, end with a phrase, N bullet points, JSON only), placed before the passage (with the request)
    or after it. Constraints and positions cycle so every pair is equally common; primary ``strict``."""
    from attnlab.evals.tasks import EvalExample, Task
    data = load_data("ifeval")
    names = list(CONSTRAINTS)
    if not 1 <= distractor_tokens <= MAX_DISTRACTOR:
        raise AttnlabError(f"distractor_tokens must be between 1 and {MAX_DISTRACTOR}, got {distractor_tokens}")

    def build(length):
        rng = random.Random(seed)
        examples = []
        for i in range(n):
            name, position = names[i % len(names)], ("before", "after")[(i // len(names)) % 2]
            arg = rng.choice(data["args"][name]) if name in data["args"] else None
            constraint = data["constraints"][name].format(arg=arg)
            request, text = rng.choice(data["requests"]), passage(tokenizer, rng, length)
            prompt = (f"{request} {constraint}\n\nPassage: {text}" if position == "before"
                      else f"Passage: {text}\n\n{request} {constraint}")
            examples.append(EvalExample(prompt, [], {"instruction": constraint, "emphasis": constraint},
                                        bucket=f"{name} / {position}", meta={"constraint": name, "arg": arg}))
        return examples

    examples = fit_budget("ifeval", "distractor-tokens", distractor_tokens, range(1, distractor_tokens), build,
                          tokenizer, max_tokens, lambda _: max_new_tokens)
    return Task("ifeval", examples, "ifeval", {"distractor_tokens": distractor_tokens, "n": n, "seed": seed,
                                               "max_new_tokens": max_new_tokens})


PAPER_TASKS = {"json-format": json_format_task, "pronouns": pronouns_task, "biasbios": biasbios_task,
               "counterfact": counterfact_task, "ifeval": ifeval_task}
