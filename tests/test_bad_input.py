"""Bad input gets one clear line (AttnlabError) and never leaves the model attached."""
import json

import pytest

import attnlab
from attnlab.collect import collect
from attnlab.errors import AttnlabError
from attnlab.spans import HeadSet


def _detached(model):
    return model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("name, match", [("no-such-alias", "unknown model"), ("/nonexistent/dir/x", "unknown model")])
def test_unknown_model(name, match):
    with pytest.raises(AttnlabError, match=match):
        attnlab.load(name)


def test_folder_with_pickle_weights_only_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(AttnlabError, match="pickle weights.*convert"):
        attnlab.load(str(tmp_path))


def test_folder_without_config(tmp_path):
    with pytest.raises(AttnlabError, match="no config.json"):
        attnlab.load(str(tmp_path))


def test_empty_text(tiny):
    model, tok = tiny
    with pytest.raises(AttnlabError, match="text 2 is empty"):
        collect(model, tok, ["fine", "   "])
    assert _detached(model)


def test_too_long_text_is_refused_or_truncated(tiny):
    model, tok = tiny
    long_text = "word " * 2000
    with pytest.raises(AttnlabError, match=r"at most 512.*--truncate"):
        collect(model, tok, [long_text])
    got = collect(model, tok, [long_text], truncate=True, probes=("first_token_mass",))
    assert len(got.tokens[0]) == 512
    assert _detached(model)


def test_span_not_in_text(tiny):
    model, tok = tiny
    with pytest.raises(AttnlabError, match="span 'zebra crossing' is not in text 1"):
        collect(model, tok, ["The cat sat."], spans={"x": "zebra crossing"})
    assert _detached(model)


@pytest.mark.parametrize("spec, match", [("L9", "layer 9 .* does not exist"), ("L1H12", "head 12 .* does not exist"),
                                         ("layer3", "cannot read head set")])
def test_head_that_does_not_exist(spec, match):
    with pytest.raises(AttnlabError, match=match):
        HeadSet.parse(spec, 4, 8)


def test_full_maps_refused_before_allocating(tiny):
    model, tok = tiny
    with pytest.raises(AttnlabError, match="need .* GiB.*reduced probes"):
        collect(model, tok, ["word " * 400], probes=("attention_maps",), map_budget_bytes=10 * 1024 ** 2)
    assert _detached(model)


def test_unknown_probe(tiny):
    with pytest.raises(AttnlabError, match="unknown probe 'bogus'"):
        collect(*tiny, ["text"], probes=("bogus",))


def test_epsilon_out_of_range(tiny):
    with pytest.raises(AttnlabError, match="epsilon"):
        attnlab.profile(tiny[0], ["text"], tokenizer=tiny[1], epsilon=1.5)
