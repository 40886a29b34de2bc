"""The harness in chat form (SmolLM2): rendering and spans, label scoring by hand, reply scoring, the report."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.errors import AttnlabError
from attnlab.evals.harness import MethodSpec, chat_prompt, render, run, score_task
from attnlab.evals.tasks import EvalExample, Task, make_task
from attnlab.scoring import score_answers


def test_render_places_spans_on_the_users_text_inside_the_template(smollm2):
    tok = smollm2[1]
    ex = EvalExample("Records: a=1. b=2.\nWhat is the value of b?", ["2"], {"emphasis": "b=2.", "instruction": "b"})
    [r] = render(tok, [ex], True, "number")
    wrapped, at = chat_prompt(tok, ex.prompt)
    assert r.prompt == wrapped and r.prompt.startswith("<|im_start|>system") and r.prompt.endswith("assistant\n")
    (a, z), = r.spans["emphasis"]
    assert r.prompt[a:z] == "b=2." and a == at + ex.prompt.index("b=2.")
    (a, z), = r.spans["instruction"]                       # the first 'b' of the user's text, not of the template
    assert a == at + ex.prompt.index("b") and r.prompt[a:z] == "b"
    [plain] = render(tok, [ex], False, "exact")
    assert plain.prompt == ex.prompt and plain.spans["emphasis"] == [(ex.prompt.index("b=2."), ex.prompt.index("b=2.") + 4)]


def test_chat_answers_follow_the_assistant_opening_and_labels_are_words_in_plain_form(smollm2):
    tok = smollm2[1]
    ex = EvalExample("Is it hot?", [" yes"], wrong=[" no"], meta={"labels": ["yes", "no"]})
    assert render(tok, [ex], True, "loglik")[0].answers == ["yes"] and render(tok, [ex], True, "loglik")[0].wrong == ["no"]
    assert render(tok, [ex], False, "loglik")[0].answers == [" yes"]
    lab = EvalExample("Is it hot?", ["no"], meta={"labels": ["yes", "no"]})
    assert render(tok, [lab], True, "labels")[0].meta["continuations"] == ["yes", "no"]
    assert render(tok, [lab], False, "labels")[0].meta["continuations"] == [" yes", " no"]


def test_a_span_not_in_the_prompt_names_the_example(smollm2):
    exs = [EvalExample("one two", ["x"], {"emphasis": "two"}), EvalExample("three four", ["x"], {"emphasis": "five"})]
    with pytest.raises(AttnlabError, match=r"^example 2 \('three four'\): its 'emphasis' span 'five' is not in the "
                                           r"prompt"):
        render(smollm2[1], exs, True, "exact")


def test_labels_scoring_matches_the_label_likelihoods_by_hand(smollm2):
    model, tok = smollm2
    task = make_task("classify", tok, 6, seed=4)
    got = score_task(model, tok, task, None)["correct"]
    expected = []
    for e in task.examples:
        prompt = chat_prompt(tok, e.prompt)[0]
        lp = score_answers(model, tok, [prompt] * len(e.meta["labels"]), e.meta["labels"]).logprob
        expected.append(float(e.meta["labels"][int(lp.argmax())] == e.answers[0]))
    assert got.tolist() == expected


def test_classify_and_choice_are_balanced_distinct_and_seeded(smollm2):
    tok = smollm2[1]
    c = make_task("classify", tok, 24, seed=1)
    assert [e.prompt for e in c.examples] == [e.prompt for e in make_task("classify", tok, 24, seed=1).examples]
    assert len({e.spans["emphasis"] for e in c.examples}) == 24
    counts = {label: sum(e.answers == [label] for e in c.examples) for label in ("positive", "negative")}
    assert counts == {"positive": 6, "negative": 6}
    assert all(e.answers[0] in e.meta["labels"] and not e.prompt.endswith("Answer:") for e in c.examples)
    q = make_task("choice", tok, 40, seed=2)
    assert sorted(e.meta["labels"].index(e.answers[0]) for e in q.examples) == sorted([0, 1, 2, 3] * 10)
    assert len({e.prompt for e in q.examples}) == 40 and {e.bucket for e in q.examples} == {
        "arithmetic", "colour", "opposite", "capital"}
    letters = make_task("choice", tok, 8, seed=2, answer="letter")
    assert all(e.meta["labels"] == ["A", "B", "C", "D"] for e in letters.examples)
    plain = make_task("choice", tok, 4, seed=2, chat=False)
    assert plain.chat is False and all(e.prompt.endswith("\nAnswer:") for e in plain.examples)
    with pytest.raises(AttnlabError, match="use --n 96 or fewer"):
        make_task("choice", tok, 97, categories=("opposite", "colour", "capital"))


def test_kv_in_chat_form_is_scored_by_the_first_number_and_reports_parsing(smollm2):
    model, tok = smollm2
    task = make_task("kv", tok, 3, seed=0, pairs=4)
    assert task.chat is True and task.scorer == "number" and task.examples[0].answers[0].isdigit()
    assert task.examples[0].prompt.endswith("Answer with the number only.")
    r = run(model, tok, task, MethodSpec("pasta", {"alpha": 0.01, "heads": "L3"}))
    assert r["chat"] is True and r["metric"] == "correct" and list(r["secondary"]) == ["parsed"]
    assert r["unparsed"]["unsteered"] == round(3 * (1 - r["secondary"]["parsed"]["unsteered"]))
    assert r["unsteered"]["accuracy"] == pytest.approx(np.mean(r["per_example"]["unsteered"]))
    old = make_task("kv", tok, 3, seed=0, pairs=4, chat=False)
    assert old.scorer == "exact" and old.examples[0].prompt.endswith("\nAnswer:")
    with pytest.raises(AttnlabError, match="written as plain text"):
        run(model, tok, old, None, chat=True)


def test_a_task_without_answer_texts_is_scored_from_its_replies(smollm2, monkeypatch):
    """ifeval-style examples carry a constraint, no answer text: the reply length falls back to the default."""
    from attnlab.evals import harness

    asked = {}

    def fake_generate(model, tokenizer, prompts, method=None, max_new_tokens=16, chat=False):
        asked["max_new_tokens"] = max_new_tokens
        return ["ALL UPPER CASE.", "not upper case."][:len(prompts)]

    monkeypatch.setattr("attnlab.steer.selection.generate_texts", fake_generate)
    task = Task("constraint", [EvalExample("Reply in upper case.", [], meta={"constraint": "upper"}),
                               EvalExample("Reply in upper case too.", [], meta={"constraint": "upper"})],
                "ifeval", {})
    r = run(*smollm2, task, None)
    assert asked["max_new_tokens"] == harness.DEFAULT_REPLY_TOKENS
    assert r["per_example"]["unsteered"] == [1, 0]


def test_the_form_is_refused_in_one_line_where_it_cannot_work(tiny, smollm2):
    reply = Task("mine", [EvalExample("Say 4.", ["4"])], "number", {})
    with pytest.raises(AttnlabError, match="asked as a chat turn.*use a model with a chat template"):
        run(*tiny, reply, None)
    with pytest.raises(AttnlabError, match="leave out --no-chat"):
        run(*smollm2, reply, None, chat=False)
    with pytest.raises(AttnlabError, match="no chat template"):
        run(*tiny, make_task("classify", tiny[1], 2), None, chat=True)
    assert make_task("kv", tiny[1], 2).scorer == "exact"              # tiny keeps its own format


def test_secondary_metrics_are_reported_with_their_own_paired_difference(smollm2, monkeypatch):
    from attnlab.evals import harness

    fixed = {None: {"prediction": [1, 0, 0, 0], "format": [1, 1, 0, 0]},
             "on": {"prediction": [1, 1, 0, 0], "format": [1, 1, 1, 1]}}
    monkeypatch.setattr(harness, "score_task", lambda m, t, task, spec, *a: {
        k: torch.tensor(v, dtype=torch.float) for k, v in fixed[spec and "on"].items()})
    task = Task("json", [EvalExample("Give JSON.", ["x"], meta={"key": "k"})] * 4, "json", {})
    r = run(*smollm2, task, MethodSpec("zerotuning", {"gamma": 2}))
    assert r["metric"] == "prediction" and r["paired"]["difference"] == pytest.approx(0.25)
    assert r["secondary"]["format"]["unsteered"] == 0.5 and r["secondary"]["format"]["steered"] == 1.0
    assert r["secondary"]["format"]["difference"] == pytest.approx(0.5)
    assert r["unparsed"] == {"unsteered": 2, "steered": 0}


def test_cli_eval_choice_in_chat_form_and_the_chat_switch(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "smollm2", "--task", "choice", "--method", "none", "--n", "4",
                            "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert data["chat"] is True and data["task"]["scorer"] == "labels" and data["n"] == 4
    bad = runner.invoke(app, ["eval", "tiny", "--task", "classify", "--chat", "--n", "2", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "no chat template" in bad.output and not (tmp_path / "b").exists()


def test_choosing_heads_on_a_task_without_answer_texts_is_one_line(smollm2):
    task = Task("constraint", [EvalExample("Reply in upper case.", [], meta={"constraint": "upper"})], "ifeval", {})
    with pytest.raises(AttnlabError, match="no answer text.*--set heads="):
        run(*smollm2, task, MethodSpec("pasta", {"top_k": 2}, select="heads", span="instruction"), train=task)


def upper_task(name: str) -> Task:
    prompts = [f"Reply in upper case: {w}." for w in ("name a colour", "name a fruit", "name a city")]
    return Task(name, [EvalExample(p, [], spans={"instruction": ["Reply in upper case"]}, meta={"constraint": "upper"})
                       for p in prompts], "ifeval", {})


def test_m_is_chosen_by_the_train_replies_with_the_fluency_check(smollm2, monkeypatch):
    """InstABoost's M on an ifeval-style task: the best strict score among fluent M, the search stopping at the
    first M whose replies fail the fluency check (perplexity > 2x the unsteered replies'), ties to the earliest."""
    replies = {None: "not upper case", 1: "still not upper", 3: "ALL UPPER CASE", 5: "ALL UPPER CASE",
               7: "GARBLED UPPER CASE", 9: "ALL UPPER CASE"}
    perplexities = {"not upper case": 10.0, "still not upper": 12.0, "ALL UPPER CASE": 19.0, "GARBLED UPPER CASE": 21.0}
    asked = []

    def fake_generate(model, tokenizer, prompts, method=None, max_new_tokens=16, chat=False):
        asked.append(None if method is None else method.m)
        return [replies[asked[-1]]] * len(prompts)

    monkeypatch.setattr("attnlab.steer.selection.generate_texts", fake_generate)
    monkeypatch.setattr("attnlab.steer.selection.perplexity", lambda m, t, prompts, outs: perplexities[outs[0]])
    spec = MethodSpec("instaboost", {"grid": (1, 3, 5, 7, 9)}, select="m")
    r = run(*smollm2, upper_task("test"), spec, train=upper_task("train"), batch_size=4)
    assert r["selection"]["m"] == 3                                   # 3 and 5 tie at 1.0: the earliest
    grid = r["selection"]["grid"]
    assert [g["m"] for g in grid] == [1, 3, 5, 7]                      # 7 fails fluency (21 > 2 x 10): 9 never tried
    assert [g["score"] for g in grid] == [0.0, 1.0, 1.0, None] and [g["fluent"] for g in grid] == [True] * 3 + [False]
    assert r["method"]["params"]["m"] == 3 and r["steered"]["accuracy"] == 1.0 and r["unsteered"]["accuracy"] == 0.0
    assert r["selection"]["criterion"] == "train replies, ifeval strict"
    assert asked[:6] == [None, 1, 3, 5, 7, None]                       # train: unsteered, then M; then the test


def test_no_fluent_m_on_the_grid_is_one_line(smollm2, monkeypatch):
    monkeypatch.setattr("attnlab.steer.selection.generate_texts",
                        lambda m, t, prompts, method=None, *a, **k: ["x" if method is None else "y"] * len(prompts))
    monkeypatch.setattr("attnlab.steer.selection.perplexity", lambda m, t, p, outs: 5.0 if outs[0] == "x" else 50.0)
    with pytest.raises(AttnlabError, match="no M on the grid keeps the train replies fluent"):
        run(*smollm2, upper_task("test"), MethodSpec("instaboost", {"grid": (3, 5)}, select="m"),
            train=upper_task("train"))


def test_fluency_perplexity_leaves_empty_replies_out(smollm2):
    """A reply that ends the turn at once decodes to "": it has no tokens and is left out of the perplexity (it
    used to be scored as " ", which merges into the chat prompt's last token and was refused); all empty: inf."""
    import math

    from attnlab.steer.selection import perplexity, search_fluent_m
    model, tok = smollm2
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("Name a colour.", "What is the capital of France?")]
    alone = perplexity(model, tok, prompts[1:], ["The capital of France is Paris."])
    assert math.isfinite(alone) and alone > 1
    assert perplexity(model, tok, prompts, ["", "The capital of France is Paris."]) == pytest.approx(alone, rel=1e-6)
    assert perplexity(model, tok, prompts, ["", "  \n"]) == math.inf
    with pytest.raises(AttnlabError, match="the unsteered train replies are all empty"):
        search_fluent_m([1, 3], lambda m: (1.0, lambda: 0.0), math.inf, outputs="train replies")
    best, grid = search_fluent_m([1, 3], lambda m: (5.0 if m == 1 else math.inf, lambda: float(m)), 4.0)
    assert best == 1 and [g["fluent"] for g in grid] == [True, False]      # an M whose replies are all empty fails
