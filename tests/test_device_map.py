"""A model spread over devices with ``attnlab.load(..., device_map=...)``: the seam, the probes, every steering
method and the sink cache give the single-device results.

The map puts layers 1 and 3 on disk (accelerate's offload hooks load their weights at each forward) and the rest
on the CPU, so accelerate's hooks run around every other layer, as they do for a map over several GPUs.
"""
import pytest
import torch

import attnlab
from attnlab.cache import SinkCache
from attnlab.models.loading import input_device

SPREAD = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "cpu",
          "model.layers.3": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
TEXTS = ["The quick brown fox jumps over the lazy dog near the river bank.",
         "Rome is the capital of Italy; Paris is the capital of France."]
PROMPT = "Answer briefly. Rome is the capital of Italy. What is the capital of Italy?"
METHODS = [
    lambda: attnlab.PASTA("Rome", heads="L1,L2H3", alpha=0.05),
    lambda: attnlab.ZeroTuning(gamma=3.0, heads="L0,L1H2"),
    lambda: attnlab.InstABoost("Answer briefly.", m=7.0),
    lambda: attnlab.SpotLight("Rome", psi=0.3),
    lambda: attnlab.ACT(beta=0.4, threshold=0.1, heads="L1"),
    lambda: attnlab.HeadScale(heads="L2H1", scale=0.0),
    lambda: attnlab.Temperature(heads="L3", temperature=2.0),
]


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    return attnlab.load("tiny", device_map=SPREAD, offload_folder=tmp_path_factory.mktemp("offload"))


def test_the_map_is_applied(spread):
    model, _ = spread
    assert model.hf_device_map == SPREAD
    assert model.model.layers[1].self_attn.q_proj.weight.device.type == "meta"    # on disk between forwards
    assert input_device(model) == torch.device("cpu")


def test_profile_equals_the_single_device_run(tiny, spread):
    one = attnlab.profile(tiny[0], TEXTS, tokenizer=tiny[1])
    many = attnlab.profile(spread[0], TEXTS, tokenizer=spread[1])
    assert many.summary == one.summary
    assert [t.first_token_received for t in many.texts] == [t.first_token_received for t in one.texts]


def test_probes_equal_the_single_device_run(tiny, spread):
    probes = ("first_token_mass", "received_attention", "entropy", "normalized_entropy", "attention_maps")
    one = attnlab.collect(*tiny, TEXTS, probes=probes, spans={"the": "the"})
    many = attnlab.collect(*spread, TEXTS, probes=probes, spans={"the": "the"})
    for name in (*probes, "span_mass:the"):
        for a, b in zip(one.stats[name], many.stats[name]):
            assert b.device.type == "cpu"
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def _steered_generation(model, tok, method):
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with attnlab.steer(model, method, tokenizer=tok):
        out = model.generate(ids, max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True)
    return out.sequences, torch.stack(out.scores)


@pytest.mark.parametrize("make", METHODS, ids=["pasta", "zerotuning", "instaboost", "spotlight", "act", "head_scale",
                                               "temperature"])
def test_every_steering_method_equals_the_single_device_run(tiny, spread, make):
    seq_one, scores_one = _steered_generation(*tiny, make())
    seq_many, scores_many = _steered_generation(*spread, make())
    assert torch.equal(seq_many, seq_one)
    torch.testing.assert_close(scores_many, scores_one, rtol=0, atol=1e-5)


def test_sink_cache_equals_the_single_device_run(tiny, spread):
    ids = tiny[1](" ".join(TEXTS * 3), return_tensors="pt").input_ids
    runs = []
    for model, _ in (tiny, spread):
        out = model.generate(ids, past_key_values=SinkCache(model, num_sink=4, window=24), max_new_tokens=6,
                             do_sample=False, output_scores=True, return_dict_in_generate=True)
        runs.append((out.sequences, torch.stack(out.scores)))
    assert torch.equal(runs[1][0], runs[0][0])
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"device_map": "balanced_low_0x"}, "device_map 'balanced_low_0x' is not known"),
    ({"device_map": {"model": "tpu9"}}, "unknown device 'tpu9'"),
    ({"device_map": "auto", "device": "cuda"}, "CUDA|either device"),
    ({"offload_folder": "/tmp/x"}, "offload_folder is only used"),
])
def test_bad_maps_are_refused_before_loading(kwargs, message):
    with pytest.raises(attnlab.AttnlabError, match=message):
        attnlab.load("tiny", **kwargs)
