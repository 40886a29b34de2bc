"""Ablation curves (Wu et al. 2024's top-K vs random head masking), each against an independent route.

* the head gate at 0 equals ``HeadScale(scale=0)`` and equals eager attention with the head's output zeroed
  (tests/reference.py), on every architecture of tests/archs.py;
* the curve at K = 0 equals the accuracy and loss of the plain model (no attnlab) scored one example at a time,
  and at K > 0 equals the same hand scoring under ``attnlab.steer(HeadScale(top-K, 0))``;
* the random baseline is ``torch.randperm`` with seed ``seed + d``: reproducible, nested over K.
"""
import json

import numpy as np
import pytest
import torch

import attnlab
from archs import ALL, build
from attnlab import seam
from attnlab.collect import ModelShape, encode
from attnlab.errors import AttnlabError
from attnlab.heads.ablation import (ScoredTokens, ablation_curves, make_examples, random_orders, ranked_heads,
                                    score)
from attnlab.plan import Plan
from reference import run_reference

TEXTS = ["The cat sat on the mat, and the dog watched it.", "Short text here."]
HEADS = [(0, 1), (1, 3)]


@pytest.mark.parametrize("arch", ALL)
def test_gate_zero_equals_head_scale_zero_equals_eager_zeroed_head(arch, tiny, minilm):
    tok = minilm[1] if arch == "bert" else tiny[1]
    model = build(arch, len(tok))
    shape = ModelShape.of(model)
    enc = encode(tok, TEXTS, shape, left_pad=shape.causal)
    inputs = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
    if shape.causal:
        inputs["position_ids"] = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
    gate = torch.ones(shape.n_layers, shape.n_heads)
    for layer, head in HEADS:
        gate[layer, head] = 0.0

    def hidden(out):
        return out.logits if hasattr(out, "logits") else out.last_hidden_state

    with torch.no_grad():
        with seam.attached(model, Plan(head_gate=gate)):
            gated = hidden(model(**inputs))
        with attnlab.steer(model, attnlab.HeadScale(heads=HEADS, scale=0.0), tokenizer=tok):
            scaled = hidden(model(**inputs))
        plain = hidden(model(**inputs))
    reference = run_reference(model, enc.input_ids, enc.attention_mask, lambda a, l: a, head_scale=lambda l: gate[l])
    valid = enc.attention_mask.bool()
    tol = 1e-4 * max(1.0, float(reference[valid].abs().max()))
    assert (gated - reference)[valid].abs().max() <= tol
    assert (gated - scaled)[valid].abs().max() <= tol
    assert (gated - plain)[valid].abs().max() > 30 * tol, "masking two heads changed (almost) nothing"


def hand_scores(model, examples, methods=()):
    """Accuracy and loss of each example alone (no padding), with the plain model or under ``attnlab.steer``."""
    acc, loss = [], []
    for row, scored in zip(examples.ids, examples.scored):
        ids = torch.tensor([row])
        with torch.no_grad():
            if methods:
                with attnlab.steer(model, *methods):
                    logits = model(ids).logits[0]
            else:
                logits = model(ids).logits[0]
        at = torch.nonzero(scored).squeeze(1)
        pred = logits[at - 1]
        right = (pred.argmax(-1) == ids[0, at]).float()
        acc.append(float(right.min()) if examples.metric == "exact" else float(right.mean()))
        loss.append(float(torch.nn.functional.cross_entropy(pred, ids[0, at])))
    return np.array(acc), np.array(loss)


def kv_examples(tok, n=6):
    """The bundled model's own kv format, lengths varying so the batch is padded."""
    from attnlab.evals.tasks import kv_task
    from attnlab.heads.ablation import teacher_forced

    task = kv_task(tok, n, seed=3, pairs=4, chat=False)
    rows = [teacher_forced(tok, ex.prompt, ex.answers[0], chat=False) for ex in task.examples]
    return ScoredTokens("kv", [r for r, _ in rows], [s for _, s in rows], "exact")


def test_curve_at_zero_is_the_plain_model_and_ranked_k_is_head_scale(tiny):
    model, tok = tiny
    examples = kv_examples(tok)
    assert len({len(r) for r in examples.ids}) > 1
    ranking = [(3, 5), (2, 0), (1, 7), (0, 2)]
    curves = ablation_curves(model, tok, ranking, task=examples, ks=(0, 2), draws=2, batch_size=4)
    acc0, loss0 = hand_scores(model, examples)
    assert 0 < acc0.mean() < 1, "both outcomes of the exact metric should occur"
    np.testing.assert_allclose(curves.ranked_scores[0], acc0)
    np.testing.assert_allclose(curves.ranked_losses[0], loss0, rtol=1e-4)
    np.testing.assert_allclose(curves.random_scores[0], np.stack([acc0, acc0]))
    acc2, loss2 = hand_scores(model, examples, [attnlab.HeadScale(heads=ranking[:2], scale=0.0)])
    np.testing.assert_allclose(curves.ranked_scores[2], acc2)
    np.testing.assert_allclose(curves.ranked_losses[2], loss2, rtol=1e-4)
    assert not np.allclose(loss2, loss0)
    for d, order in enumerate(random_orders(4, 8, 2, 0)):
        acc, loss = hand_scores(model, examples, [attnlab.HeadScale(heads=order[:2], scale=0.0)])
        np.testing.assert_allclose(curves.random_losses[2][d], loss, rtol=1e-4)
        np.testing.assert_allclose(curves.random_scores[2][d], acc)


def test_random_draws_are_seeded_reproducible_and_nested(tiny):
    model, tok = tiny
    ranking = torch.arange(32.0).view(4, 8)
    kwargs = dict(task="induction", ks=(0, 1, 3), draws=3, n=3, length=8)
    a = ablation_curves(model, tok, ranking, seed=5, **kwargs).to_json()
    b = ablation_curves(model, tok, ranking, seed=5, **kwargs).to_json()
    assert json.dumps(a) == json.dumps(b)
    orders = random_orders(4, 8, 3, 5)
    for d, order in enumerate(orders):
        expected = torch.randperm(32, generator=torch.Generator().manual_seed(5 + d)).tolist()
        assert [l * 8 + h for l, h in order] == expected
    assert random_orders(4, 8, 3, 5) == orders and random_orders(4, 8, 1, 6)[0] == orders[1]
    assert len({tuple(o[:3]) for o in orders}) == 3
    assert a["curve"][2]["heads"] == ["L3H7", "L3H6", "L3H5"]     # highest scores first


def test_ranking_as_tensor_or_list():
    scores = torch.tensor([[0.1, 0.9], [0.5, 0.9]])
    assert ranked_heads(scores, 2, 2) == [(0, 1), (1, 1), (1, 0), (0, 0)]
    assert ranked_heads([(1, 0), (0, 1)], 2, 2) == [(1, 0), (0, 1)]
    assert ranked_heads("L1H0, L0H1", 2, 2) == [(1, 0), (0, 1)]
    with pytest.raises(AttnlabError, match="layer 2 in 'L2H0' does not exist"):
        ranked_heads("L2H0", 2, 2)
    with pytest.raises(AttnlabError, match="L2H0 does not exist"):
        ranked_heads([(2, 0)], 2, 2)
    with pytest.raises(AttnlabError, match="twice"):
        ranked_heads([(0, 0), (0, 0)], 2, 2)
    with pytest.raises(AttnlabError, match=r"\[2, 2\]"):
        ranked_heads(torch.zeros(3, 2), 2, 2)


def test_bad_requests_are_refused(tiny):
    model, tok = tiny
    with pytest.raises(AttnlabError, match="ranking names 2 heads but K goes up to 4"):
        ablation_curves(model, tok, [(0, 0), (0, 1)], task="induction", ks=(0, 4), n=2, length=4)
    with pytest.raises(AttnlabError, match="between 0 and the model's 32 heads"):
        ablation_curves(model, tok, torch.zeros(4, 8), task="induction", ks=(0, 40), n=2, length=4)
    with pytest.raises(AttnlabError, match="unknown ablation task 'nope'"):
        make_examples("nope", tok, 2)
    with pytest.raises(AttnlabError, match="head_gate has shape"):
        score(model, make_examples("induction", tok, 2, length=4), torch.ones(4, 3))


def test_tasks_score_what_they_say(tiny):
    _, tok = tiny
    induction = make_examples("induction", tok, 2, length=5)
    row, scored = induction.ids[0], induction.scored[0]
    assert row[1:6] == row[6:11] and scored.tolist() == [False] * 7 + [True] * 4
    needle = make_examples("needle", tok, 3, length=60)
    for row, scored in zip(needle.ids, needle.scored):
        answer = tok.decode([t for t, s in zip(row, scored) if s]).strip()
        assert answer.isdigit() and f"={answer}." in tok.decode(row)
    text = make_examples("text", tok, 2, tokens=20)
    assert [len(r) for r in text.ids] == [20, 20] and int(text.scored[0].sum()) == 19


def test_plot_and_json(tiny, tmp_path):
    model, tok = tiny
    curves = ablation_curves(model, tok, torch.rand(4, 8), task="text", ks=(0, 1, 2), draws=2, n=3, tokens=16)
    data = json.loads(json.dumps(curves.to_json()))
    row = data["curve"][1]
    assert data["n"] == 3 and data["draws"] == 2 and row["k"] == 1 and len(row["random"]["per_draw_loss"]) == 2
    lo, hi = row["ranked"]["loss"]["ci95"]
    assert lo <= row["ranked"]["loss"]["mean"] <= hi
    assert curves.plot(tmp_path / "c.png").stat().st_size > 1000
