"""The seam: attaching with an empty plan (or with probes) leaves outputs equal to eager attention.

The seam delegates to transformers' SDPA function, so it is compared with eager attention (``attn_implementation=
"eager"``, an independent computation), never with SDPA itself.
"""
import pytest
import torch

import attnlab
from archs import ALL, build
from attnlab import seam
from attnlab.collect import encode, ModelShape
from attnlab.errors import AttnlabError
from attnlab.plan import Plan
from attnlab.probes.attention import Entropy, FirstTokenMass, FullMaps, ReceivedAttention

TEXTS = ["The cat sat on the mat, and the dog watched it.", "Short text here."]


def _outputs(model, enc, **kwargs):
    with torch.no_grad():
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **kwargs)
    return out


def _hidden(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _eager(model, enc):
    """Outputs and attention maps of eager attention; the model's own implementation restored afterwards."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        out = _outputs(model, enc, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    return _hidden(out), out.attentions


def _batch(model, tokenizer):
    return encode(tokenizer, TEXTS, ModelShape.of(model), left_pad=ModelShape.of(model).causal)


def _tol(reference, valid):
    return 2e-5 * max(1.0, float(reference[valid].abs().max()))      # float32 SDPA vs float32 eager


def _eager_setup(arch, tiny, minilm):
    """A random-init model of ``arch``, a padded batch, and eager attention's hidden states and maps on it."""
    tok = minilm[1] if arch == "bert" else tiny[1]
    model = build(arch, len(tok))
    enc = _batch(model, tok)
    reference, eager_maps = _eager(model, enc)
    return model, enc, reference, eager_maps, enc.attention_mask.bool()


@pytest.mark.parametrize("arch", ALL)
def test_empty_and_probing_plans_match_eager(arch, tiny, minilm):
    model, enc, reference, eager_maps, valid = _eager_setup(arch, tiny, minilm)
    tol = _tol(reference, valid)
    with seam.attached(model, Plan()):
        assert model.config._attn_implementation == seam.NAME
        empty = _hidden(_outputs(model, enc))
    probes = [FirstTokenMass(), ReceivedAttention(), Entropy(), FullMaps()]
    with seam.attached(model, Plan(probes=probes)):
        probed = _hidden(_outputs(model, enc))
    assert (empty - reference)[valid].abs().max() <= tol
    assert (probed - reference)[valid].abs().max() <= tol
    assert model.config._attn_implementation == "sdpa"
    # every layer went through the seam: the maps the probe saw are eager's, layer by layer (real query rows)
    maps = probes[-1].result()                                            # [L, B, H, Q, K]
    assert maps.shape[0] == model.config.num_hidden_layers
    rows = valid[:, None, :, None]
    for layer, ref in enumerate(eager_maps):
        assert ((maps[layer] - ref) * rows).abs().max() <= 1e-5
    for probe in probes[:-1]:
        assert probe.result().shape[0] == model.config.num_hidden_layers


@pytest.mark.parametrize("arch", ["llama", "gemma3", "bert"])
def test_the_eager_comparison_sees_a_steered_plan(arch, tiny, minilm):
    """The same comparison fails for a plan that does change attention (ZeroTuning on every head)."""
    model, enc, reference, _, valid = _eager_setup(arch, tiny, minilm)
    with attnlab.steer(model, attnlab.ZeroTuning(gamma=20.0)):
        steered = _hidden(_outputs(model, enc))
    assert (steered - reference)[valid].abs().max() > 100 * _tol(reference, valid)


@pytest.mark.parametrize("name", ["tiny", "minilm"])
def test_bundled_models_unchanged_when_attached(name, tiny, minilm):
    model, tok = tiny if name == "tiny" else minilm
    enc = _batch(model, tok)
    reference, _ = _eager(model, enc)
    valid = enc.attention_mask.bool()
    with seam.attached(model, Plan(probes=[FirstTokenMass()])):
        probed = _hidden(_outputs(model, enc))
    assert (probed - reference)[valid].abs().max() <= _tol(reference, valid)


def test_detach_restores_implementation_after_exception(tiny):
    model, _ = tiny
    before = model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with seam.attached(model, Plan()):
            assert model.config._attn_implementation == "attnlab"
            raise RuntimeError("boom")
    assert model.config._attn_implementation == before


def test_eager_model_is_restored_to_eager(tiny, minilm):
    model = build("llama", len(tiny[1]))
    model.set_attn_implementation("eager")
    with seam.attached(model, Plan()):
        pass
    assert model.config._attn_implementation == "eager"


def test_unsupported_architecture_is_refused():
    from unsupported_model import ToyConfig, ToyModel

    with pytest.raises(AttnlabError, match="AttentionInterface"):
        with seam.attached(ToyModel(ToyConfig()), Plan()):
            pass


def test_not_a_model_is_refused():
    with pytest.raises(AttnlabError, match="PreTrainedModel"):
        seam.check_supported(torch.nn.Linear(2, 2))
