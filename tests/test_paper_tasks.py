"""The papers' own tasks (PASTA's four, IFEval-style): prompts and answers against hand-computed expectations,
determinism in the seed, spans that land on the user's text inside SmolLM2's chat template, and refusals that
name the largest setting that fits."""
import re
from collections import Counter

import pytest

from attnlab.errors import AttnlabError
from attnlab.evals import harness
from attnlab.evals.constraints import CONSTRAINTS
from attnlab.evals.paper_tasks import (JSON_INSTRUCTION, OCCUPATION_QUESTION, PAPER_TASKS, PRONOUN_INSTRUCTION,
                                       load_data, prompt_tokens)
from attnlab.evals.scorers import get_reply_scorer
from attnlab.evals.tasks import TASKS, make_task
from attnlab.spans import Spans


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


def test_registered_in_tasks():
    for name in ("json-format", "pronouns", "biasbios", "counterfact", "ifeval"):
        assert TASKS[name] is PAPER_TASKS[name]


def test_data_tables():
    bios = load_data("bios")
    people = bios["people"]
    assert len(people) >= 80 and len({p["name"] for p in people}) == len(people)
    assert len(bios["occupations"]) == 10
    counts = Counter(p["occupation"] for p in people)
    assert set(counts) == set(bios["occupations"]) and min(counts.values()) >= 8
    assert Counter(p["pronoun"] for p in people) == {"she": 42, "he": 42}
    facts = load_data("facts")
    assert len(facts["facts"]) >= 40 and {f["relation"] for f in facts["facts"]} == set(facts["relations"])
    assert set(load_data("ifeval")["constraints"]) == set(CONSTRAINTS)


@pytest.mark.parametrize("name", list(PAPER_TASKS))
def test_deterministic_in_the_seed(tok, name):
    a, b, c = (make_task(name, tok, 14, seed) for seed in (3, 3, 4))
    assert [(e.prompt, e.answers, e.spans, e.bucket, e.wrong, e.meta) for e in a.examples] == \
           [(e.prompt, e.answers, e.spans, e.bucket, e.wrong, e.meta) for e in b.examples]
    assert [e.prompt for e in a.examples] != [e.prompt for e in c.examples]
    assert len(a.examples) == 14


@pytest.mark.parametrize("name", list(PAPER_TASKS))
def test_spans_land_on_the_user_text_in_the_chat_template(tok, name):
    task = make_task(name, tok, 7, 0)
    for span in ("emphasis", "instruction"):
        pieces = [e.spans[span] for e in task.examples]
        inputs = Spans.encode(tok, [e.prompt for e in task.examples], {span: [[p] for p in pieces]}, chat=True)
        for row, piece in enumerate(pieces):
            covered = tok.decode(inputs["input_ids"][row][inputs.masks[span][row]])
            assert covered.strip() == piece.strip()
    harness.render(tok, task.examples, True, task.scorer)      # every span found, labels checked


def test_json_format(tok):
    task = make_task("json-format", tok, 12, 0, facts=2)
    people = {p["name"]: p for p in load_data("bios")["people"]}
    assert task.scorer == "json" and task.params["max_new_tokens"] == 48
    for e in task.examples:
        bio, instruction = e.prompt.split("\n\n")
        assert instruction == JSON_INSTRUCTION == e.spans["emphasis"] == e.spans["instruction"]
        name = bio.split(" is ")[0]
        person = people[name]
        assert bio.startswith(f"{name} is ") and f" {person['occupation']} in {person['city']}." in bio
        assert len(re.findall(r"[.!?](?: |$)", bio)) == 3                         # the first sentence and 2 facts
        assert e.answers == [person["occupation"]] and e.meta == {"key": "occupation"}
        assert e.bucket == person["pronoun"]
        assert "{" not in bio and "}" not in bio                                      # placeholders filled
    e = task.examples[0]
    score = get_reply_scorer("json").score
    assert score(f'```json\n{{"occupation": "{e.answers[0].upper()}"}}\n```', e) == {"prediction": 1.0, "format": 1.0}
    assert score('{"occupation": "astronaut"}', e) == {"prediction": 0.0, "format": 1.0}


def test_pronouns(tok):
    task = make_task("pronouns", tok, 20, 0)
    assert task.scorer == "pronouns" and task.params["max_new_tokens"] == 24 + 40 * 3
    for e in task.examples:
        bio, instruction = e.prompt.split("\n\n")
        assert instruction == PRONOUN_INSTRUCTION and e.answers == [] and e.meta == {"name": bio.split(" is ")[0]}
        words = set(re.findall(r"\b\w+\b", bio.lower()))
        assert ("she" in words) == (e.bucket == "she") and ("he" in words) == (e.bucket == "he")
        score = get_reply_scorer("pronouns").score
        assert score(bio, e)["changed"] == 0.0                                    # the text itself is not a rewrite
        assert score(f"{e.meta['name']} is a chef. They cook and their soup is good.", e)["changed"] == 1.0


def test_biasbios(tok):
    occupations = load_data("bios")["occupations"]
    labels = [o.capitalize() for o in occupations]
    task = make_task("biasbios", tok, 20, 0, distractors=4)
    assert task.scorer == "labels" and make_task("biasbios", tok, 1, 0).params["distractors"] == 2
    for e in task.examples:
        text, question = e.prompt.split("\n\n")
        assert question == OCCUPATION_QUESTION == e.spans["instruction"]
        first = e.spans["emphasis"]
        occupation = e.answers[0].lower()
        assert text.startswith(first) and f" {occupation} in " in first and first.count(".") == 1
        rest = text[len(first):]
        named = [o for o in occupations if re.search(rf"\b{o}\b", rest)]
        assert len(named) == 4 and occupation not in named                        # 4 others, never the true one
        assert e.meta == {"labels": labels} and e.answers[0] in labels
    only_first = make_task("biasbios", tok, 3, 0, distractors=0)
    assert all(e.prompt == f"{e.spans['emphasis']}\n\n{OCCUPATION_QUESTION}" for e in only_first.examples)
    with pytest.raises(AttnlabError, match="distractors must be between 0 and 8, got 9"):
        make_task("biasbios", tok, 3, 0, distractors=9)


def test_counterfact(tok):
    table = load_data("facts")
    task = make_task("counterfact", tok, 60, 0)
    assert task.scorer == "loglik"
    assert [e.bucket for e in task.examples[:4]] == ["efficacy", "paraphrase", "efficacy", "paraphrase"]
    france = next(e for e in task.examples if e.prompt.startswith("Previously, the capital of France was Paris,"))
    new = france.answers[0].removeprefix("The capital of France is ")
    assert new != "Paris" and new in {f["object"] for f in table["facts"] if f["relation"] == "capital"}
    question = "What is the capital of France?" if france.bucket == "efficacy" else \
        "Which city is the seat of government of France?"
    assert france.prompt == ("Previously, the capital of France was Paris, but now the capital of France is "
                             f"{new}. {question}")
    assert france.spans == {"emphasis": f"now the capital of France is {new}", "instruction": question}
    assert france.wrong == ["The capital of France is Paris"]
    for e in task.examples:
        assert e.answers[0] != e.wrong[0]


def test_ifeval(tok):
    names = list(CONSTRAINTS)
    task = make_task("ifeval", tok, 2 * len(names), 0, distractor_tokens=120)
    assert task.scorer == "ifeval" and task.params["max_new_tokens"] == 160
    assert sorted(e.bucket for e in task.examples) == sorted(f"{c} / {p}" for c in names for p in ("before", "after"))
    for e in task.examples:
        name, position = e.bucket.split(" / ")
        constraint = e.spans["instruction"]
        assert e.meta["constraint"] == name and e.spans["emphasis"] == constraint
        if name in ("include-word", "end-with", "bullets"):
            assert str(e.meta["arg"]) in constraint
        head, text = e.prompt.split("\n\n")
        if position == "before":
            assert head.endswith(constraint) and text.startswith("Passage: ")
        else:
            assert head.startswith("Passage: ") and text.endswith(constraint)
        prose = (text if position == "before" else head).removeprefix("Passage: ")
        assert 100 <= len(tok(prose, add_special_tokens=False)["input_ids"]) <= 121
    assert get_reply_scorer("ifeval").score("A, B", task.examples[names.index("no-commas")])["strict"] == 0.0


def _longest(tok, task):
    return max(prompt_tokens(tok, e.prompt) for e in task.examples) + task.params.get("max_new_tokens", 0)


def test_refusals_name_the_largest_setting_that_fits(tok):
    full, two, one = (make_task("json-format", tok, 10, 0, facts=k) for k in (3, 2, 1))
    budget = _longest(tok, two)
    assert _longest(tok, full) > budget
    with pytest.raises(AttnlabError, match=f"task 'json-format' makes prompts of {_longest(tok, full)} tokens .* "
                                           f"at most {budget}: use --facts 2 or fewer"):
        make_task("json-format", tok, 10, 0, budget)
    assert make_task("json-format", tok, 10, 0, budget, facts=2).examples[0].prompt == two.examples[0].prompt
    with pytest.raises(AttnlabError, match="use --facts 1 or fewer"):
        make_task("pronouns", tok, 10, 0, _longest(tok, make_task("pronouns", tok, 10, 0, facts=1)))
    with pytest.raises(AttnlabError, match="no setting fits"):
        make_task("json-format", tok, 10, 0, _longest(tok, one) - 1)
    with pytest.raises(AttnlabError, match="task 'counterfact' makes prompts .* no setting fits"):
        make_task("counterfact", tok, 10, 0, 40)

    with pytest.raises(AttnlabError, match=r"use --distractor-tokens (\d+) or fewer") as refused:
        make_task("ifeval", tok, 14, 0, 500, distractor_tokens=400)
    fitting = int(re.search(r"--distractor-tokens (\d+)", str(refused.value)).group(1))
    assert _longest(tok, make_task("ifeval", tok, 14, 0, 500, distractor_tokens=fitting)) <= 500
    assert _longest(tok, make_task("ifeval", tok, 14, 0, None, distractor_tokens=fitting + 1)) > 500   # the largest
    with pytest.raises(AttnlabError, match="distractor_tokens must be between 1 and 4000"):
        make_task("ifeval", tok, 2, 0, distractor_tokens=0)
