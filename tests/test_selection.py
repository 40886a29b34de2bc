"""Head selection and hyper-parameter choice.

The choice logic is checked with a stub scorer: ``selection.evaluate`` (or the scoring under it) is replaced
by a table, so every candidate's score is known in advance and the expected choice is written by hand.
A few tests then run the real thing on the bundled model, against an independent recomputation.
"""
import json
import random

import pytest
import torch

import attnlab
from attnlab.errors import AttnlabError
from attnlab.models.synthetic import override
from attnlab.scoring import AnswerScores
from attnlab.steer import selection
from attnlab.steer.pasta import load_head_config, save_head_config
from attnlab.steer.selection import Example, choose_value, evaluate, pasta_heads, rank_heads


def examples(n=6, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ex = override(rng, 2)
        out.append(Example(ex["prompt"], ex["answer"], {"emphasis": ex["emphasis"]}))
    return out


def stub_examples(n=2):
    return [Example(f"prompt {i}", " answer", {"emphasis": "prompt", "instruction": "prompt"}) for i in range(n)]


class StubEvaluate:
    """Replaces ``selection.evaluate``: the score of a method is ``table[key(method)]``; unsteered is ``base``."""

    def __init__(self, table, key, base=0.0):
        self.table, self.key, self.base, self.calls = table, key, base, []

    def __call__(self, model, tokenizer, examples, make_method, metric="accuracy", batch_size=16):
        if make_method is None:
            self.calls.append(None)
            return self.base
        method = make_method(lambda name: [[ex.spans[name]] for ex in examples])
        self.calls.append(self.key(method))
        return self.table[self.key(method)]


# --- evaluate: the metric from per-example scores --------------------------------------------------------------

def test_evaluate_turns_answer_scores_into_each_metric(monkeypatch):
    scores = AnswerScores(logprob=torch.tensor([-2.0, -6.0, -1.0]), correct=torch.tensor([True, False, True]),
                          entropy=torch.tensor([0.5, 1.0, 3.0]), n_tokens=torch.tensor([1, 3, 2]))
    seen = []

    def fake_score(model, tokenizer, prompts, answers, steer=None, batch_size=16):
        seen.append(steer)
        return scores

    monkeypatch.setattr(selection, "score_answers", fake_score)
    exs = stub_examples(3)
    assert evaluate(None, None, exs, None, "accuracy") == pytest.approx(2 / 3)
    assert evaluate(None, None, exs, None, "logprob") == pytest.approx((-2.0 - 2.0 - 0.5) / 3)   # per-token mean
    assert evaluate(None, None, exs, None, "entropy") == pytest.approx(-(0.5 + 1.0 + 3.0) / 3)  # negated
    assert all(steer is None or steer([0, 1, 2]) is None for steer in seen)     # unsteered: no steering context
    asked = []
    exs = [Example(f"p{i}", " a", {"emphasis": f"span {i}"}) for i in range(3)]
    evaluate(None, None, exs, lambda spans: asked.append(spans("emphasis")) or attnlab.ZeroTuning(2.0), "accuracy")
    context = seen[-1]([0, 2])                              # the batch of examples 0 and 2 ...
    assert asked == [[["span 0"], ["span 2"]]]             # ... gets their own spans, one list per prompt
    assert hasattr(context, "__enter__") and hasattr(context, "__exit__")
    with pytest.raises(AttnlabError, match="unknown metric 'f1'"):
        evaluate(None, None, exs, None, "f1")
    with pytest.raises(AttnlabError, match="no examples"):
        evaluate(None, None, [], None, "accuracy")


# --- rank_heads / pasta_heads ------------------------------------------------------------------------------------

def test_rank_heads_orders_by_hand_known_gain(tiny, monkeypatch):
    model, tok = tiny                               # 4 layers x 8 heads; only the first 4 candidates are tried
    stub = StubEvaluate({(0, 0): 0.30, (0, 1): 0.55, (0, 2): 0.10, (0, 3): 0.55, (0, 4): 9.0},
                        key=lambda m: m[1], base=0.25)
    monkeypatch.setattr(selection, "evaluate", stub)
    ranked = rank_heads(model, tok, stub_examples(), lambda spans, heads: ("method", heads[0]), budget=4)
    # gains: (0,0) +0.05, (0,1) +0.30, (0,2) -0.15, (0,3) +0.30; ties broken by the head
    assert [h for _, h in ranked] == [(0, 1), (0, 3), (0, 0), (0, 2)]
    assert [g for g, _ in ranked] == pytest.approx([0.30, 0.30, 0.05, -0.15])
    assert stub.calls == [None, (0, 0), (0, 1), (0, 2), (0, 3)]       # one baseline, then in layer order
    steps = []
    ranked = rank_heads(model, tok, stub_examples(), lambda spans, heads: ("method", heads[0]),
                        heads=[(0, 4), (0, 2)], on_step=steps.append)
    assert ranked == [(pytest.approx(8.75), (0, 4)), (pytest.approx(-0.15), (0, 2))]
    assert steps == [1, 1]
    with pytest.raises(AttnlabError, match="budget must be >= 1"):
        rank_heads(model, tok, stub_examples(), lambda spans, heads: None, budget=0)


def test_rank_heads_coarse_to_fine_tries_only_the_best_layers_heads(tiny, monkeypatch):
    model, tok = tiny                               # 4 layers x 8 heads
    whole = {0: 0.2, 1: 0.9, 2: 0.1, 3: 0.7}        # steering layer l whole scores whole[l]
    stub = StubEvaluate({}, key=lambda m: tuple(m[1]), base=0.0)
    stub.table = {tuple((l, h) for h in range(8)): score for l, score in whole.items()}
    stub.table.update({((l, h),): l + h / 10 for l in range(4) for h in range(8)})
    monkeypatch.setattr(selection, "evaluate", stub)
    ranked = rank_heads(model, tok, stub_examples(), lambda spans, heads: ("method", list(heads)), layers=2)
    # layers ranked 1 (0.9) > 3 (0.7) > 0 > 2: only heads of layers 1 and 3 are tried, 4 + 2 * 8 evaluations
    assert len(stub.calls) == 1 + 4 + 16
    assert {h for _, h in ranked} == {(l, h) for l in (1, 3) for h in range(8)}
    assert ranked[0] == (pytest.approx(3.7), (3, 7)) and ranked[-1] == (pytest.approx(1.0), (1, 0))
    with pytest.raises(AttnlabError, match="layers must be >= 1"):
        rank_heads(model, tok, stub_examples(), lambda spans, heads: None, layers=0)


def test_rank_heads_gain_equals_a_direct_evaluation(tiny):
    model, tok = tiny
    exs = examples()
    ranked = rank_heads(model, tok, exs, lambda spans, heads: attnlab.PASTA(spans("emphasis"), heads=heads),
                        budget=3)
    assert sorted(h for _, h in ranked) == [(0, 0), (0, 1), (0, 2)]
    base = evaluate(model, tok, exs, None, "logprob")
    for gain, head in ranked:
        direct = evaluate(model, tok, exs, lambda spans: attnlab.PASTA(spans("emphasis"), heads=[head]), "logprob")
        assert abs((direct - base) - gain) < 1e-6
    assert any(abs(g) > 1e-4 for g, _ in ranked)          # steering one head changes the score


def test_pasta_heads_combines_each_tasks_top_k(tiny, monkeypatch):
    model, tok = tiny
    a, b = stub_examples(2), stub_examples(3)
    # task a ranks (0,2) > (0,0) > (0,1) > (0,3); task b ranks (0,3) > (0,2) > (0,1) > (0,0)
    scores = {2: {(0, 0): 0.5, (0, 1): 0.4, (0, 2): 0.9, (0, 3): 0.1},
              3: {(0, 0): 0.1, (0, 1): 0.4, (0, 2): 0.6, (0, 3): 0.8}}
    alphas = set()

    def fake(model, tokenizer, examples, make_method, metric="accuracy", batch_size=16):
        if make_method is None:
            return 0.0
        method = make_method(lambda name: [[ex.spans[name]] for ex in examples])
        assert isinstance(method, attnlab.PASTA)
        alphas.add(method.alpha)
        return scores[len(examples)][tuple(method.heads[0])]

    monkeypatch.setattr(selection, "evaluate", fake)
    tasks = {"a": a, "b": b}
    assert pasta_heads(model, tok, tasks, top_k=2, budget=4) == [(0, 2)]
    assert pasta_heads(model, tok, tasks, top_k=2, budget=4, combine="union") == [(0, 0), (0, 2), (0, 3)]
    assert pasta_heads(model, tok, tasks, top_k=3, budget=4) == [(0, 1), (0, 2)]
    assert pasta_heads(model, tok, tasks, top_k=2, budget=4, alpha=0.2) == [(0, 2)]
    assert alphas == {0.01, 0.2}
    with pytest.raises(AttnlabError, match="combine must be"):
        pasta_heads(model, tok, tasks, combine="both")


def test_head_config_round_trip_is_exact_and_steers_those_heads(tiny, tmp_path):
    model, tok = tiny
    heads = [(3, 0), (0, 2), (0, 1)]
    path = save_head_config(heads, tmp_path / "heads.json")
    assert json.loads(path.read_text()) == {"0": [1, 2], "3": [0]}      # PASTA's format, layers and heads sorted
    assert load_head_config(path) == {0: [1, 2], 3: [0]}
    with pytest.raises(AttnlabError, match="already exists"):
        save_head_config(heads, path)
    save_head_config({1: [4]}, path, overwrite=True)
    assert json.loads(path.read_text()) == {"1": [4]}
    save_head_config(heads, path, overwrite=True)

    prompt = "Previously the capital of Zorland was Paris, but now the capital of Zorland is Rome. The capital is"
    span = "but now the capital of Zorland is Rome."
    enc = tok(prompt, return_tensors="pt")

    def run(method=None):
        with torch.no_grad():
            if method is None:
                return model(**enc).logits
            with attnlab.steer(model, method, tokenizer=tok):
                return model(**enc).logits

    from_file = run(attnlab.PASTA(span, heads=str(path)))
    assert torch.equal(from_file, run(attnlab.PASTA(span, heads="L0H1-2,L3H0")))
    assert (from_file - run()).abs().max() > 1e-2
    assert (from_file - run(attnlab.PASTA(span, heads="L0H1-3,L3H0"))).abs().max() > 1e-3


# --- choose_value ------------------------------------------------------------------------------------------------

def test_choose_value_picks_the_hand_known_best_and_the_earliest_tie(tiny, monkeypatch):
    model, tok = tiny
    stub = StubEvaluate({0.5: 0.2, 1.0: 0.7, 2.0: 0.4, 4.0: 0.7}, key=lambda m: m)
    monkeypatch.setattr(selection, "evaluate", stub)
    steps = []
    best, results = choose_value(model, tok, stub_examples(), lambda spans, g: g, [0.5, 1.0, 2.0, 4.0],
                                 on_step=steps.append)
    assert best == 1.0                                       # 4.0 ties at 0.7: the earliest wins
    assert results == [(0.5, 0.2), (1.0, 0.7), (2.0, 0.4), (4.0, 0.7)]
    assert steps == [1, 1, 1, 1]
    best, _ = choose_value(model, tok, stub_examples(), lambda spans, g: g, [4.0, 2.0, 0.5])
    assert best == 4.0
    best, _ = choose_value(model, tok, stub_examples(), lambda spans, g: g, [0.5, 2.0])
    assert best == 2.0
    with pytest.raises(AttnlabError, match="empty grid"):
        choose_value(model, tok, stub_examples(), lambda spans, g: g, [])


def test_choose_value_scores_are_the_steered_scores(tiny):
    """On the real model: gamma = 1 is unsteered; every other grid point is scored as evaluate scores it."""
    model, tok = tiny
    exs = examples(4)
    best, results = choose_value(model, tok, exs, lambda spans, g: attnlab.ZeroTuning(gamma=g), [0.5, 1.0, 4.0],
                                 metric="entropy")
    assert [v for v, _ in results] == [0.5, 1.0, 4.0]
    unsteered = evaluate(model, tok, exs, None, "entropy")
    assert results[1][1] == pytest.approx(unsteered, abs=1e-6)
    direct = evaluate(model, tok, exs, lambda spans: attnlab.ZeroTuning(gamma=4.0), "entropy")
    assert results[2][1] == pytest.approx(direct, abs=1e-6)
    assert abs(results[2][1] - unsteered) > 1e-4
    assert best in (0.5, 1.0, 4.0)


# --- choose_instaboost_m -------------------------------------------------------------------------------------------

def stub_instaboost(monkeypatch, ppl: dict, score: dict):
    """Stub generation (text names the M), perplexity (``ppl[text]``) and evaluation (``score[M]``)."""
    generated, evaluated = [], []

    def fake_generate(model, tokenizer, prompts, method=None, max_new_tokens=16, chat=False):
        name = "base" if method is None else method.m
        generated.append(name)
        return [f"out {name}"] * len(prompts)

    def fake_perplexity(model, tokenizer, prompts, outputs):
        return ppl[outputs[0].split(" ", 1)[1] if outputs[0] != "out base" else "base"]

    def fake_evaluate(model, tokenizer, examples, make_method, metric="accuracy", batch_size=16):
        method = make_method(lambda name: [[ex.spans[name]] for ex in examples])
        assert isinstance(method, attnlab.InstABoost)
        evaluated.append(method.m)
        return score[method.m]

    monkeypatch.setattr(selection, "generate_texts", fake_generate)
    monkeypatch.setattr(selection, "perplexity", fake_perplexity)
    monkeypatch.setattr(selection, "evaluate", fake_evaluate)
    return generated, evaluated


def test_choose_instaboost_m_stops_at_the_first_unfluent_m(tiny, monkeypatch):
    from attnlab.steer.selection import choose_instaboost_m

    model, tok = tiny
    ppl = {"base": 10.0, "1": 10.0, "3": 19.0, "19": 25.0, "50": 11.0}
    score = {1: 0.2, 3: 0.5, 19: 0.9, 50: 1.0}
    generated, evaluated = stub_instaboost(monkeypatch, {k if k == "base" else str(float(k)): v
                                                         for k, v in ppl.items()}, score)
    best, results = choose_instaboost_m(model, tok, stub_examples(), grid=[1, 3, 19, 50], max_ppl_ratio=2.0)
    # 19 is the first M past 2 x 10: the search stops there (50, fluent and better, is never tried)
    assert best == 3
    assert [(r["m"], r["fluent"], r["score"]) for r in results] == [(1, True, 0.2), (3, True, 0.5),
                                                                     (19, False, None)]
    assert [r["perplexity"] for r in results] == [10.0, 19.0, 25.0]
    assert all(r["base_perplexity"] == 10.0 for r in results)
    assert generated == ["base", 1.0, 3.0, 19.0]
    assert evaluated == [1.0, 3.0]                          # an unfluent M is never scored


def test_choose_instaboost_m_ratio_boundary_and_none_fluent(tiny, monkeypatch):
    from attnlab.steer.selection import choose_instaboost_m

    model, tok = tiny
    ppl = {"base": 10.0, "1.0": 10.0, "3.0": 20.0, "19.0": 20.000001}
    generated, evaluated = stub_instaboost(monkeypatch, ppl, {1: 0.2, 3: 0.1, 19: 0.9})
    best, results = choose_instaboost_m(model, tok, stub_examples(), grid=[1, 3, 19], max_ppl_ratio=2.0)
    assert best == 1                                        # 3 is fluent (exactly 2x) but scores lower
    assert [r["fluent"] for r in results] == [True, True, False]
    # strict: only M whose perplexity does not rise at all
    best, results = choose_instaboost_m(model, tok, stub_examples(), grid=[1, 3, 19], max_ppl_ratio=1.0)
    assert best == 1 and [(r["m"], r["fluent"]) for r in results] == [(1, True), (3, False)]
    with pytest.raises(AttnlabError, match="no M on the grid keeps the outputs fluent"):
        choose_instaboost_m(model, tok, stub_examples(), grid=[3, 19], max_ppl_ratio=1.0)


def test_choose_instaboost_m_at_one_is_unsteered(tiny):
    from attnlab.models.synthetic import format_instruction
    from attnlab.steer.selection import choose_instaboost_m

    model, tok = tiny
    rng = random.Random(3)
    exs = []
    for _ in range(3):
        ex = format_instruction(rng, "The sea was calm.")
        exs.append(Example(ex["prompt"], ex["answer"], {"instruction": ex["instruction"]}))
    best, results = choose_instaboost_m(model, tok, exs, grid=[1, 19], max_new_tokens=4, max_ppl_ratio=1e9)
    assert [r["m"] for r in results] == [1, 19] and all(r["fluent"] for r in results)
    assert results[0]["perplexity"] == pytest.approx(results[0]["base_perplexity"], rel=1e-4)  # M = 1 is unsteered
    assert results[0]["score"] == pytest.approx(evaluate(model, tok, exs, None, "accuracy"))
    assert best == (1 if results[0]["score"] >= results[1]["score"] else 19)
