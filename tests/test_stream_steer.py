"""Steering + an evicting SinkCache: key masks follow the tokens the cache keeps; evicted spans are reported."""
import math
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import attnlab
from attnlab import AttnlabError
from attnlab.cache import SinkCache
from attnlab.errors import AttnlabWarning

PROMPT = "The old lighthouse keeper climbed the stairs and looked at the sea. The secret word is marigold."
SPAN = "The secret word is marigold."


def one_layer(vocab: int):
    """With one layer a token's key and value depend on the token and its position only, so a streaming step
    over a sink cache equals a fresh forward of the kept tokens (the cache re-rotates keys to their slots)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def test_steered_stream_equals_fresh_steered_forward_of_kept_tokens(tiny):
    _, tok = tiny
    model = one_layer(len(tok))
    ids = tok(PROMPT, return_tensors="pt").input_ids
    p = ids.shape[1]
    span = attnlab.Spans.resolve(tok, ids, torch.ones_like(ids, dtype=torch.bool), SPAN)[0]
    stream = torch.cat([ids, torch.randint(3, len(tok), (1, 12), generator=torch.Generator().manual_seed(1))], 1)
    cache = SinkCache(model, num_sink=2, window=10)
    alpha = 0.01
    steps = []
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        with attnlab.steer(model, attnlab.PASTA(SPAN, alpha=alpha), tokenizer=tok) as handle:
            model(ids, past_key_values=cache, use_cache=True)
            for t in range(p, stream.shape[1]):
                logits = model(stream[:, t:t + 1], past_key_values=cache, use_cache=True).logits[0, -1]
                steps.append((cache.key_positions(0)[0].clone(), logits))
    assert steps[-1][0].numel() == 2 + 10 + 1 and int(steps[-1][0][-1]) == stream.shape[1] - 1
    evicted = handle.evicted_spans["emphasis"]
    assert 0 < evicted <= int(span.sum())
    assert any(issubclass(w.category, AttnlabWarning) and "emphasis" in str(w.message) for w in caught)
    for positions, got in steps:
        # PASTA (exclude): log(alpha) on the kept prompt tokens outside the span, nothing on the rest
        biased = tuple(i for i, pos in enumerate(positions.tolist()) if pos < p and not span[pos])
        assert biased, "the sinks are prompt tokens outside the span"
        with torch.no_grad(), attnlab.steer(model, attnlab.Edit(keys=biased, bias=math.log(alpha))):
            want = model(stream[:, positions]).logits[0, -1]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # and the steering did something: unsteered logits differ
    with torch.no_grad():
        plain = model(stream[:, steps[-1][0]]).logits[0, -1]
    assert (plain - steps[-1][1]).abs().max() > 1e-3


def test_generate_with_steering_and_sink_cache_reports_evicted_span(tiny):
    model, tok = tiny
    ids = tok(PROMPT, return_tensors="pt").input_ids
    cache = SinkCache(model, num_sink=4, window=16)
    with pytest.warns(AttnlabWarning, match="emphasis"):
        with attnlab.steer(model, attnlab.PASTA(SPAN)) as handle:
            out = model.generate(ids, past_key_values=cache, max_new_tokens=40, do_sample=False,
                                 min_new_tokens=40)
    assert out.shape[1] == ids.shape[1] + 40
    assert all(layer.stored <= 4 + 16 + 1 for layer in cache.layers)
    assert handle.evicted_spans == {"emphasis": int(attnlab.Spans.resolve(
        tok, ids, torch.ones_like(ids, dtype=torch.bool), SPAN).sum())}
    assert model.config._attn_implementation == "sdpa"


def test_no_eviction_means_nothing_reported(tiny):
    model, tok = tiny
    ids = tok(PROMPT, return_tensors="pt").input_ids
    cache = SinkCache(model, num_sink=4, window=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttnlabWarning)
        with attnlab.steer(model, attnlab.PASTA(SPAN)) as handle:
            model.generate(ids, past_key_values=cache, max_new_tokens=5, do_sample=False)
    assert handle.evicted_spans == {}


def test_per_head_policy_is_refused_with_steering(tiny):
    model, tok = tiny
    ids = tok(PROMPT, return_tensors="pt").input_ids
    cache = SinkCache(model, num_sink=4, window=16, policy="h2o")
    with pytest.raises(AttnlabError, match="different tokens per KV head") as info:
        with attnlab.steer(model, attnlab.PASTA(SPAN), probes=[cache.scorer()]):
            model.generate(ids, past_key_values=cache, max_new_tokens=5)
    assert "\n" not in str(info.value)
    assert model.config._attn_implementation == "sdpa"


def test_tova_steers_through_the_scorer_probe(tiny):
    model, tok = tiny
    ids = tok(PROMPT, return_tensors="pt").input_ids
    cache = SinkCache(model, num_sink=4, window=16, policy="tova")
    with pytest.warns(AttnlabWarning), attnlab.steer(model, attnlab.PASTA(SPAN), probes=[cache.scorer()]) as handle:
        model.generate(ids, past_key_values=cache, max_new_tokens=30, min_new_tokens=30, do_sample=False)
    assert handle.evicted_spans and cache.layers[0].evictions > 0


def test_dynamic_steering_is_refused_once_the_cache_evicts(tiny):
    model, tok = tiny
    ids = tok(PROMPT, return_tensors="pt").input_ids
    cache = SinkCache(model, num_sink=4, window=16)
    with pytest.raises(AttnlabError, match="cannot follow a cache that evicts"):
        with attnlab.steer(model, attnlab.ACT()):
            model.generate(ids, past_key_values=cache, max_new_tokens=10)
