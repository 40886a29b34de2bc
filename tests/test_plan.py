"""The frozen Plan, its runs, and the dynamic-edit protocol (issue #11).

A plan is built once and reused; each prompt gets its own run; dynamic edits see only a LayerView and return
bias factors. Checked against independent computations: a static Edit with the same bias, eager attention maps.
"""
import dataclasses
import json
import math

import pytest
import torch

import attnlab
from attnlab.dynamic import LayerView
from attnlab.errors import AttnlabError
from attnlab.probes.attention import FirstTokenMass, ReceivedAttention, RowMass
from attnlab.steer.act import ACTCalibration
from attnlab.steer.session import build_plan

PROMPT = "Previously the capital of Zorland was Paris, but now the capital of Zorland is Rome. The capital is"


def eager_maps(model, inputs):
    """Attention maps from transformers' eager attention (the independent reference), implementation restored."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(**inputs, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(before)


def logits(model, tok, prompt=PROMPT):
    with torch.no_grad():
        return model(**tok(prompt, return_tensors="pt")).logits


def test_plan_is_frozen_and_describes_itself_as_json(tiny):
    model, _ = tiny
    plan, spans = build_plan(model, [attnlab.PASTA("Rome", heads="L1H0,L2H3", alpha=0.01), attnlab.ACT(heads="L0")])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.edits = ()
    described = json.loads(json.dumps(plan.describe()))
    assert spans == {"emphasis": "Rome"}
    [edit] = described["edits"]
    assert edit["heads"] == ["L1H0", "L2H3"] and edit["keys"] == "~span:emphasis"
    assert math.isclose(edit["bias"], math.log(0.01))
    [act] = described["dynamic"]
    n_heads = attnlab.ModelShape.of(model).n_heads
    assert act["type"] == "ACTCalibration" and act["beta"] == 0.4 and act["heads"] == [f"L0H{h}" for h in range(n_heads)]


def test_plan_without_resolved_heads_is_refused():
    with pytest.raises(AttnlabError, match="build_plan"):
        attnlab.Plan(edits=[attnlab.Edit(bias=1.0)])


def test_one_plan_serves_two_prompts_in_turn(tiny):
    """Runs are apart: steering prompt B after prompt A gives what steering B alone gives (ACT keeps no sinks of A)."""
    model, tok = tiny
    other = "Records: apple=482. river=17. Query: river? Answer:"
    method = attnlab.ACT(threshold=0.05)
    with attnlab.steer(model, method, tokenizer=tok):
        alone = logits(model, tok, other)
    with attnlab.steer(model, method, tokenizer=tok) as handle:
        logits(model, tok)
        first_run = handle.run
        after = logits(model, tok, other)
        assert handle.run is not first_run and handle.run.plan is first_run.plan
    torch.testing.assert_close(after, alone, rtol=0, atol=0)
    assert (alone - logits(model, tok, other)).abs().max() > 1e-3          # ACT found sinks and moved the output


class ConstantFirstTokenBias:
    """A user's dynamic edit through the protocol: log(gamma) on the first real token, every head and layer."""

    def __init__(self, gamma):
        self.gamma = gamma

    def layer_bias(self, view: LayerView):
        first = view.context.key_mask("first", view.k_len).float()
        q = torch.full((first.shape[0], view.n_heads, view.q_len, 1), math.log(self.gamma))
        return q, first[..., None]


def test_a_user_dynamic_edit_equals_the_static_edit_with_the_same_bias(tiny):
    model, tok = tiny
    inputs = tok([PROMPT, "Records: apple=482. river=17."], return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = model(**inputs).logits
        with attnlab.steer(model, ConstantFirstTokenBias(3.0), tokenizer=tok):
            dynamic = model(**inputs).logits
        with attnlab.steer(model, attnlab.Edit(keys="first", bias=math.log(3.0)), tokenizer=tok):
            static = model(**inputs).logits
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(dynamic[valid], static[valid], rtol=1e-5, atol=1e-5)
    assert (dynamic[valid] - plain[valid]).abs().max() > 1e-2


def test_measure_sees_the_unsteered_attention_of_the_layer(tiny):
    """What a dynamic edit measures equals the eager maps of the unsteered model, for a subset of heads too."""
    model, tok = tiny
    inputs = tok(PROMPT, return_tensors="pt")
    seen = {}

    class Recorder:
        def layer_bias(self, view):
            keys = view.context.key_mask("first", view.k_len)
            seen[view.layer] = (view.measure(RowMass(keys))[0], view.measure(RowMass(keys), heads=[1, 3])[0],
                                view.measure(ReceivedAttention())[0])
            return None

    with attnlab.steer(model, Recorder(), tokenizer=tok):
        with torch.no_grad():
            model(**inputs)
    eager = eager_maps(model, inputs)
    for layer, maps in enumerate(eager):                                           # [1, H, T, T]
        row_mass, subset, received = seen[layer]
        torch.testing.assert_close(row_mass, maps[..., 0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(subset, maps[:, [1, 3], :, 0], rtol=1e-4, atol=1e-5)
        t = maps.shape[-1]
        by_hand = maps.sum(2) / torch.arange(t, 0, -1).float()                    # causal: T - k queries see key k
        torch.testing.assert_close(received, by_hand, rtol=1e-4, atol=1e-5)


def test_act_outside_a_prompt_forward_is_one_line():
    ctx = attnlab.TokenContext(valid=torch.ones(1, 5, dtype=torch.bool))
    view = LayerView(layer=0, n_heads=2, q_len=1, k_len=6, context=ctx, memory={}, measure=lambda *a, **k: [])
    calibration = ACTCalibration(0.4, 0.1, attnlab.HeadSet(frozenset({(0, 0)})))
    with pytest.raises(AttnlabError, match="prompt's forward"):
        calibration.layer_bias(view)


def test_first_token_mass_probe_through_a_plan_equals_eager(tiny):
    from attnlab import seam

    model, tok = tiny
    enc = tok([PROMPT, "Records: apple=482."], return_tensors="pt", padding=True)
    probe = FirstTokenMass()
    with seam.attached(model, attnlab.Plan(probes=[probe]), attnlab.TokenContext(enc["attention_mask"].bool())):
        with torch.no_grad():
            model(**enc)
    eager = eager_maps(model, enc)
    valid = enc["attention_mask"].bool()
    for layer, maps in enumerate(eager):
        for b in range(2):
            first = int(valid[b].int().argmax())
            rows = [i for i in range(valid.shape[1]) if valid[b, i] and i != first]
            expected = maps[b][:, rows, first].mean(-1)
            torch.testing.assert_close(probe.result()[layer, b], expected, rtol=1e-4, atol=1e-5)


class FloorOnFirstToken:
    """The README's example dynamic edit: at least 30% of every head's attention on the first token."""

    def layer_bias(self, view):
        first = view.context.key_mask("first", view.k_len)
        (mass,) = view.measure(RowMass(first))
        m = mass.clamp(1e-6, 1 - 1e-6)
        boost = torch.log(0.3 * (1 - m) / (0.7 * m)).clamp(min=0)
        return boost[..., None], first.float()[..., None]


def test_readme_dynamic_edit_lifts_every_row_to_its_floor(tiny):
    from attnlab.probes.attention import FullMaps

    model, tok = tiny
    inputs = tok(PROMPT, return_tensors="pt")
    maps = FullMaps()
    with attnlab.steer(model, FloorOnFirstToken(), tokenizer=tok, probes=[maps]), torch.no_grad():
        model(**inputs)
    steered = maps.result()[:, 0, :, :, 0]                                         # [L, H, Q]: mass on token 0
    unsteered = torch.stack([m[0, :, :, 0] for m in eager_maps(model, inputs)])
    assert (unsteered < 0.25).any()                                                 # there is something to lift
    assert (steered >= 0.3 - 1e-5).all()
    # layer 0 sees the same input steered or not: rows below the floor land on it, the others are untouched
    low = unsteered[0] < 0.3
    torch.testing.assert_close(steered[0][low], torch.full_like(steered[0][low], 0.3), rtol=0, atol=1e-5)
    torch.testing.assert_close(steered[0][~low], unsteered[0][~low], rtol=0, atol=1e-5)


def test_key_selectors_joined_by_and_pick_the_keys_all_of_them_pick():
    """``"first&~span:x"``: the first real token unless it is in span x (left padding, one row each way)."""
    from attnlab.context import TokenContext
    valid = torch.tensor([[False, True, True, True], [True, True, True, True]])
    span = torch.tensor([[False, True, True, False], [False, False, True, False]])
    ctx = TokenContext(valid=valid, spans={"x": span})
    got = ctx.key_mask("first&~span:x", 6)
    first_outside = torch.tensor([[False] * 6, [True] + [False] * 5])
    assert torch.equal(got, first_outside)
    assert torch.equal(ctx.key_mask("prompt&generated", 6), torch.zeros(2, 6, dtype=torch.bool))
    rest = torch.cat([valid & ~span, torch.zeros(2, 2, dtype=torch.bool)], 1)
    rest[1, 0] = False                                                      # "~first": row 1's first token
    assert torch.equal(ctx.key_mask("~span:x&~first", 6), rest)
    assert attnlab.Edit(keys="first&~span:x", bias=1.0).span_names == {"x"}
    with pytest.raises(AttnlabError, match="unknown keys selector 'sink'"):
        attnlab.Edit(keys="first&sink", bias=1.0)
