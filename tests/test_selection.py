"""Head selection and hyper-parameter choice, on the bundled model with a handful of examples."""
import json
import random

import pytest

import attnlab
from attnlab.errors import AttnlabError
from attnlab.models.synthetic import override
from attnlab.steer.pasta import load_head_config, save_head_config
from attnlab.steer.selection import Example, choose_value, evaluate, pasta_heads, rank_heads


def examples(n=6, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ex = override(rng, 2)
        out.append(Example(ex["prompt"], ex["answer"], {"emphasis": ex["emphasis"]}))
    return out


def test_rank_heads_scores_single_heads_against_baseline(tiny):
    model, tok = tiny
    exs = examples()
    ranked = rank_heads(model, tok, exs, lambda spans, heads: attnlab.PASTA(spans("emphasis"), heads=heads),
                        budget=3)
    assert [h for _, h in sorted(ranked, key=lambda x: x[1])] == [(0, 0), (0, 1), (0, 2)]
    base = evaluate(model, tok, exs, None, "logprob")
    gain, head = ranked[0]
    direct = evaluate(model, tok, exs, lambda spans: attnlab.PASTA(spans("emphasis"), heads=[head]), "logprob")
    assert abs((direct - base) - gain) < 1e-6
    assert ranked == sorted(ranked, key=lambda x: (-x[0], x[1]))


def test_pasta_heads_combine_and_config_round_trip(tiny, tmp_path):
    model, tok = tiny
    tasks = {"a": examples(4, 1), "b": examples(4, 2)}
    inter = pasta_heads(model, tok, tasks, top_k=2, budget=4)
    union = pasta_heads(model, tok, tasks, top_k=2, budget=4, combine="union")
    assert set(inter) <= set(union) and len(union) <= 4
    path = save_head_config(union, tmp_path / "heads.json")
    loaded = load_head_config(path)
    assert sorted((l, h) for l, hs in loaded.items() for h in hs) == union
    assert json.loads(path.read_text())  # PASTA format: {"layer": [heads]}
    with pytest.raises(AttnlabError, match="already exists"):
        save_head_config(union, path)
    # a config file is accepted directly by PASTA
    attnlab.PASTA("x", heads=str(path))


def test_choose_value_picks_the_best_grid_point(tiny):
    model, tok = tiny
    exs = examples(4)
    best, results = choose_value(model, tok, exs, lambda spans, g: attnlab.ZeroTuning(gamma=g), [0.5, 1.0, 2.0],
                                 metric="entropy")
    assert best == max(results, key=lambda r: r[1])[0]
    assert [v for v, _ in results] == [0.5, 1.0, 2.0]


def test_choose_instaboost_m_stops_at_the_first_unfluent_m(tiny):
    from attnlab.models.synthetic import format_instruction
    from attnlab.steer.selection import choose_instaboost_m

    model, tok = tiny
    rng = random.Random(3)
    exs = []
    for _ in range(3):
        ex = format_instruction(rng, "The sea was calm.")
        exs.append(Example(ex["prompt"], ex["answer"], {"instruction": ex["instruction"]}))
    best, results = choose_instaboost_m(model, tok, exs, grid=[1, 3, 19], max_new_tokens=4, max_ppl_ratio=1e9)
    assert [r["m"] for r in results] == [1, 3, 19] and all(r["fluent"] for r in results)
    assert best == max(results, key=lambda r: r["score"])["m"]
    assert results[0]["perplexity"] == pytest.approx(results[0]["base_perplexity"], rel=1e-4)  # M = 1 is unsteered
    _, strict = choose_instaboost_m(model, tok, exs, grid=[1, 3, 19], max_new_tokens=4, max_ppl_ratio=1.0 + 1e-6)
    assert not strict[-1]["fluent"] or len(strict) == 3
    assert all(r["fluent"] for r in strict[:-1])
