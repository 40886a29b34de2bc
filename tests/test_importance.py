"""Head importance of Michel et al. 2019, each quantity against an independent route.

* the gate's gradient equals a central finite difference of each example's loss (a float64 GPT-2), and
  equals the gradient through a forward pre-hook on ``o_proj`` that scales each head's slice of its input (plain
  model, no attnlab), on the bundled model and on SmolLM2 (GQA);
* the per-layer l2 normalisation, the single-head ablation (against ``HeadScale``) and the pruning curve's order
  and its K = 0 point (against the plain model) are recomputed by hand.
"""
import json

import numpy as np
import pytest
import torch

import attnlab
from archs import build
from attnlab import seam
from attnlab.errors import AttnlabError
from attnlab.heads.ablation import ScoredTokens, batch_losses, make_examples
from attnlab.heads.importance import (ablation_importance, gradient_importance, head_importance,
                                      normalize_by_layer, pruning_curve)
from attnlab.plan import Plan
from test_ablation import hand_scores


def uneven_text(tok, n=3, tokens=14):
    """Prose windows cut to different lengths, so a batch of them is padded."""
    text = make_examples("text", tok, n, tokens=tokens)
    rows = [row[:tokens - 3 * i] for i, row in enumerate(text.ids)]
    return ScoredTokens("text", rows, [s[:len(r)] for s, r in zip(text.scored, rows)], "token")


def hook_gradients(model, examples, n_layers, n_heads):
    """``[N, L, H]``: each example's ``dL/d xi`` with ``xi`` scaling the heads' slices of ``o_proj``'s input."""
    xi = torch.ones(n_layers, n_heads, requires_grad=True)

    def scale(layer):
        def hook(module, args):
            x = args[0]
            return (x.view(*x.shape[:-1], n_heads, -1) * xi[layer][:, None]).view(x.shape),
        return hook

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(scale(i))
               for i, layer in enumerate(model.model.layers)]
    grads = []
    try:
        for row, scored in zip(examples.ids, examples.scored):
            ids = torch.tensor([row])
            at = torch.nonzero(scored).squeeze(1)
            loss = torch.nn.functional.cross_entropy(model(ids).logits[0, at - 1], ids[0, at])
            grads.append(torch.autograd.grad(loss, xi)[0])
    finally:
        for h in handles:
            h.remove()
    return torch.stack(grads)


def test_gate_gradient_equals_finite_difference(tiny):
    """In float64 end to end: a random-init GPT-2 (LayerNorm; Llama's RMSNorm computes in float32)."""
    model = build("gpt2", len(tiny[1])).double()
    examples = uneven_text(tiny[1])
    gate = torch.ones(len(examples), 2, 4, dtype=torch.float64, requires_grad=True)
    loss, _ = batch_losses(model, examples.ids, examples.scored, gate, 2)
    (grad,) = torch.autograd.grad(loss.sum(), gate)
    eps = 1e-6
    for b in range(len(examples)):
        for layer, head in [(0, 0), (0, 3), (1, 1), (1, 2)]:
            losses = []
            for sign in (1, -1):
                g = torch.ones(2, 4, dtype=torch.float64)
                g[layer, head] += sign * eps
                with torch.no_grad():
                    losses.append(batch_losses(model, examples.ids[b:b + 1], examples.scored[b:b + 1], g, 2)[0])
            fd = float((losses[0] - losses[1]) / (2 * eps))
            assert abs(float(grad[b, layer, head]) - fd) <= 1e-6 * max(1e-3, abs(fd))
    assert grad.abs().min() > 0


def test_importance_equals_o_proj_hook_gradients(tiny):
    model, tok = tiny
    examples = uneven_text(tok, n=4)
    by_hook = hook_gradients(model, examples, 4, 8).abs().mean(0)
    found = gradient_importance(model, examples, batch_size=3, pad_id=tok.pad_token_id)
    assert (found - by_hook).abs().max() <= 1e-4 * float(by_hook.abs().max())
    assert all(p.grad is None for p in model.parameters())


def test_importance_on_smollm2_equals_o_proj_hook_gradients(smollm2):
    model, tok = smollm2
    examples = make_examples("text", tok, 2, tokens=16)
    by_hook = hook_gradients(model, examples, 30, 9).abs().mean(0)
    found = gradient_importance(model, examples, batch_size=2)
    assert (found - by_hook).abs().max() <= 1e-3 * float(by_hook.abs().max())


def test_scores_are_normalised_per_layer_and_ranked(tiny):
    model, tok = tiny
    imp = head_importance(model, tok, "text", n=3, tokens=12)
    by_hand = imp.raw / imp.raw.pow(2).sum(1, keepdim=True).sqrt()
    assert torch.allclose(imp.scores, by_hand)
    assert torch.allclose(imp.scores.norm(dim=1), torch.ones(4, dtype=imp.scores.dtype))
    values = [r["importance"] for r in imp.table()]
    assert values == sorted(values, reverse=True) and len(values) == 32
    assert torch.equal(normalize_by_layer(torch.zeros(2, 3)), torch.zeros(2, 3))
    raw = head_importance(model, tok, "text", n=3, tokens=12, normalize=False)
    assert torch.equal(raw.scores, raw.raw) and torch.allclose(raw.raw, imp.raw)


def test_ablation_importance_is_the_loss_rise_of_masking_one_head(tiny, tmp_path):
    model, tok = tiny
    examples = uneven_text(tok)
    found = ablation_importance(model, examples, batch_size=3, pad_id=tok.pad_token_id)
    acc0, loss0 = hand_scores(model, examples)
    assert found["base_loss"] == pytest.approx(loss0.mean(), rel=1e-5)
    for layer, head in [(0, 3), (3, 1)]:
        acc, loss = hand_scores(model, examples, [attnlab.HeadScale(heads=[(layer, head)], scale=0.0)])
        assert float(found["loss"][layer, head]) == pytest.approx(loss.mean() - loss0.mean(), abs=1e-5)
        assert float(found["accuracy"][layer, head]) == pytest.approx(acc0.mean() - acc.mean(), abs=1e-6)
    imp = head_importance(model, tok, examples, ablation=True)
    data = json.loads(json.dumps(imp.to_json()))
    assert -1 <= data["spearman_gradient_vs_ablation_loss"] <= 1 and "ablation_loss" in data["table"][0]
    assert imp.plot(tmp_path / "imp.png").stat().st_size > 1000


def test_pruning_curve_masks_least_important_first(tiny):
    model, tok = tiny
    scores = torch.arange(32.0).view(4, 8).flip(0)             # layer 3 least important, then layer 2, ...
    examples = uneven_text(tok)
    curves = pruning_curve(model, tok, scores, examples, fractions=(0.0, 0.25, 1.0), draws=2)
    assert curves.ks == [0, 8, 32] and curves.label == "least important first"
    assert curves.ranked[:8] == [(3, h) for h in range(8)]
    acc0, loss0 = hand_scores(model, examples)
    np.testing.assert_allclose(curves.ranked_losses[0], loss0, rtol=1e-4)
    acc8, loss8 = hand_scores(model, examples, [attnlab.HeadScale(heads="L3", scale=0.0)])
    np.testing.assert_allclose(curves.ranked_losses[8], loss8, rtol=1e-4)
    np.testing.assert_allclose(curves.ranked_losses[32], curves.random_losses[32][0], rtol=1e-6)
    with pytest.raises(AttnlabError, match="fractions must lie between 0 and 1"):
        pruning_curve(model, tok, scores, examples, fractions=(0.5, 2.0))


def test_plan_head_gate(tiny):
    model, tok = tiny
    plan = Plan(head_gate=torch.ones(4, 8))
    assert not plan.is_empty and not plan.steers and plan.describe()["head_gate"] == [4, 8]
    with pytest.raises(AttnlabError, match="head_gate must be a"):
        Plan(head_gate=torch.ones(8))
    ids = tok(["a short text of several words"], return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(ids).logits
        with seam.attached(model, plan):
            gated = model(ids).logits
        with pytest.raises(AttnlabError, match="head_gate has shape"):
            with seam.attached(model, Plan(head_gate=torch.ones(2, 8))):
                model(ids)
    assert (plain - gated).abs().max() <= 1e-5
