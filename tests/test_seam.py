"""The seam: attaching with an empty plan (or with probes) leaves outputs equal to plain SDPA."""
import pytest
import torch

from archs import ALL, build
from attnlab import seam
from attnlab.collect import encode, ModelShape
from attnlab.errors import AttnlabError
from attnlab.context import TokenContext
from attnlab.plan import Plan
from attnlab.probes.attention import Entropy, FirstTokenMass, ReceivedAttention

TEXTS = ["The cat sat on the mat, and the dog watched it.", "Short text here."]


def _outputs(model, enc):
    with torch.no_grad():
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _batch(model, tokenizer):
    return encode(tokenizer, TEXTS, ModelShape.of(model), left_pad=ModelShape.of(model).causal)


@pytest.mark.parametrize("arch", ALL)
def test_empty_and_probing_plans_match_sdpa(arch, tiny, minilm):
    tok = minilm[1] if arch == "bert" else tiny[1]
    model = build(arch, len(tok))
    enc = _batch(model, tok)
    reference = _outputs(model, enc)
    with seam.attached(model, Plan()) as att:
        empty = _outputs(model, enc)
    assert att.calls == 2  # both layers went through attnlab
    probes = [FirstTokenMass(), ReceivedAttention(), Entropy()]
    with seam.attached(model, Plan(probes=probes), TokenContext(enc.attention_mask.bool())):
        probed = _outputs(model, enc)
    valid = enc.attention_mask.bool()
    assert (empty - reference)[valid].abs().max() <= 1e-5
    assert (probed - reference)[valid].abs().max() <= 1e-5
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("name", ["tiny", "minilm"])
def test_bundled_models_unchanged_when_attached(name, tiny, minilm):
    model, tok = tiny if name == "tiny" else minilm
    enc = _batch(model, tok)
    reference = _outputs(model, enc)
    with seam.attached(model, Plan(probes=[FirstTokenMass()]), TokenContext(enc.attention_mask.bool())):
        probed = _outputs(model, enc)
    assert (probed - reference)[enc.attention_mask.bool()].abs().max() <= 1e-5


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
