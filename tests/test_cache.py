"""SinkCache: positions re-assigned in the cache (StreamingLLM), exactness vs DynamicCache, generate, bad input,
and the attention-guided policies' scores through attnlab's seam vs eager attention maps."""
import pytest
import torch
from transformers import (DynamicCache, Gemma3ForCausalLM, Gemma3TextConfig, GemmaConfig, GemmaForCausalLM, LlamaConfig,
                          LlamaForCausalLM, MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

from attnlab import AttnlabError
from attnlab.cache import H2O, TOVA, SinkCache, rope_adapters
from attnlab.probes.chunked import repeat_kv

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=256)
SLIDING = 12        # Gemma 3's sliding window here: every test cache (num_sink + window + q) crosses it
# Gemma 3: local layers with base 1e4, global layers with base 1e6 and their own scaling (linear; YaRN, whose
# attention_scaling is then in the stored keys); the variants put either layer type first (the layer that a
# fresh forward of the kept tokens reproduces)
GEMMA3 = {"gemma3": (["sliding_attention", "full_attention"], {"rope_type": "linear", "factor": 2.0}),
          "gemma3_global_first": (["full_attention", "sliding_attention"],
                                  {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})}


def build(arch: str, attn: str = "sdpa"):
    """Seeded random-init 2-layer models; GQA everywhere; Phi3 with partial rotary; Gemma 3 with mixed layers."""
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **COMMON))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, **COMMON))
    elif arch == "mistral":
        model = MistralForCausalLM(MistralConfig(num_key_value_heads=1, sliding_window=None, **COMMON))
    elif arch == "gemma":
        model = GemmaForCausalLM(GemmaConfig(num_key_value_heads=2, head_dim=16, **COMMON))
    elif arch == "phi3":
        model = Phi3ForCausalLM(Phi3Config(num_key_value_heads=2, partial_rotary_factor=0.5, pad_token_id=0,
                                           **COMMON))
    elif arch in GEMMA3:
        layer_types, global_rope = GEMMA3[arch]
        rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                "full_attention": {"rope_theta": 1e6, **global_rope}}
        model = Gemma3ForCausalLM(Gemma3TextConfig(num_key_value_heads=2, head_dim=16, sliding_window=SLIDING,
                                                   layer_types=layer_types, rope_parameters=rope, **COMMON))
    else:
        raise KeyError(arch)
    model.set_attn_implementation(attn)
    return model.eval()


def tokens(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def stream(model, cache, ids, chunk: int = 1):
    """Feed ``ids`` ``chunk`` tokens at a time; return the logits of every position ``[1, n, V]``."""
    out = []
    with torch.no_grad():
        for t in range(0, ids.shape[1], chunk):
            out.append(model(ids[:, t:t + chunk], past_key_values=cache, use_cache=True).logits)
    return torch.cat(out, dim=1)


# ---- positions: cached keys equal a fresh contiguous forward of the kept tokens -------------------------------
def kept_tokens(ids, layer, n):
    """The tokens a StreamingLLM layer holds after ``n`` tokens: the sinks, then the most recent ones."""
    sinks = min(layer.num_sink, layer.stored)
    return torch.cat([ids[:, :sinks], ids[:, n - (layer.stored - sinks):n]], dim=1)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma", "phi3", *GEMMA3])
@pytest.mark.parametrize("chunk", [1, 7])
def test_keys_equal_fresh_forward_of_kept_tokens(arch, chunk):
    model = build(arch)
    num_sink, window, n = 4, 16, 75
    ids = tokens(n)
    cache = SinkCache(model, num_sink=num_sink, window=window)
    stream(model, cache, ids, chunk)
    layer = cache.layers[0]
    assert layer.evictions > 0
    kept = kept_tokens(ids, layer, n)
    fresh = DynamicCache()          # full layers: the sliding ones of DynamicCache(config) keep only the window
    with torch.no_grad():
        model(kept, past_key_values=fresh, use_cache=True)
    got = layer.current_keys()
    assert got.shape == fresh.layers[0].keys.shape
    assert (got - fresh.layers[0].keys).abs().max() <= 1e-5
    assert (layer.values - fresh.layers[0].values).abs().max() <= 1e-5


def test_half_precision_does_not_drift():
    """Re-rotation is one shot from the model's own key: error stays at the bf16 floor after 300 evictions."""
    model = build("llama").to(torch.bfloat16)
    ids = tokens(320)
    cache = SinkCache(model, num_sink=4, window=16)
    stream(model, cache, ids)
    layer = cache.layers[0]
    kept = kept_tokens(ids, layer, 320)
    fresh = DynamicCache(config=model.config)
    with torch.no_grad():
        model(kept, past_key_values=fresh, use_cache=True)
    ref = fresh.layers[0].keys.float()
    rel = (layer.current_keys().float() - ref).norm() / ref.norm()
    assert rel < 0.02


# ---- a cache larger than the text is exactly DynamicCache ------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gemma", "gemma3"])
def test_large_cache_is_identical_to_dynamic_cache(arch):
    """Bit for bit like a DynamicCache of full layers; Gemma 3's sliding layers also hold the keys that their mask
    hides, so transformers' own cache (whose sliding layers drop them) agrees up to float rounding only."""
    model = build(arch)
    ids = tokens(40)
    dense = stream(model, DynamicCache(), ids)
    sink = stream(model, SinkCache(model, num_sink=4, window=100), ids)
    assert torch.equal(dense, sink)
    torch.testing.assert_close(stream(model, DynamicCache(config=model.config), ids), sink, atol=1e-5, rtol=1e-5)
    prompt = ids[:, :12]
    kw = dict(max_new_tokens=30, do_sample=False, output_scores=True, return_dict_in_generate=True)
    a = model.generate(prompt, past_key_values=DynamicCache(), **kw)
    b = model.generate(prompt, past_key_values=SinkCache(model, num_sink=4, window=100), **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert all(torch.equal(x, y) for x, y in zip(a.scores, b.scores))


@pytest.mark.parametrize("chunk", [1, 4])
def test_original_positions_equal_dense_attention_with_evicted_keys_masked(chunk):
    """positions="original" (H2O / TOVA / SnapKV style): no re-rotation, the mask offset keeps causality."""
    model = build("llama")
    num_sink, window, n = 2, 10, 40
    ids = tokens(n)
    got = stream(model, SinkCache(model, num_sink=num_sink, window=window, positions="original"), ids, chunk)
    dense, want = DynamicCache(config=model.config), []
    with torch.no_grad():
        for t in range(0, n, chunk):
            mask = torch.tensor([[1 if j < num_sink or j >= t - window else 0 for j in range(t + chunk)]])
            want.append(model(ids[:, t:t + chunk], attention_mask=mask, position_ids=torch.arange(t, t + chunk)[None],
                              past_key_values=dense, use_cache=True).logits)
    torch.testing.assert_close(got, torch.cat(want, dim=1), atol=1e-5, rtol=1e-5)


# ---- Gemma 3: per-layer-type RoPE and sliding-window layers ------------------------------------------------------
@pytest.mark.parametrize("arch", [*GEMMA3])
def test_gemma3_every_layer_rotates_with_its_layer_types_frequencies(arch):
    """Every layer (not only the first, which a fresh forward checks) holds its keys as transformers' own rotary
    embedding of its layer type would rotate them to their slots; one cos/sin memo per layer type."""
    from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

    model = build(arch)
    rotary, types = model.model.rotary_emb, model.config.layer_types
    adapters = rope_adapters(model)
    assert [a.layer_type for a in adapters] == types
    assert all(torch.equal(a.inv_freq, getattr(rotary, f"{a.layer_type}_inv_freq")) for a in adapters)
    assert not torch.equal(adapters[0].inv_freq, adapters[1].inv_freq)
    cache = SinkCache(model, num_sink=4, window=16)
    assert cache.layers[0].memo is not cache.layers[1].memo
    stream(model, cache, tokens(60))
    for layer, layer_type in zip(cache.layers, types):
        assert layer.rope.layer_type == layer_type and layer.evictions > 0
        delta = torch.arange(layer.stored) - layer.written[:, 0]
        cos, sin = rotary(layer.keys, delta, layer_type)
        scaling = getattr(rotary, f"{layer_type}_attention_scaling")     # YaRN's: already in the stored keys
        want = apply_rotary_pos_emb(layer.keys, layer.keys, cos, sin)[1] / scaling
        assert (layer.current_keys() - want).abs().max() <= 1e-5
    # a memo filled by one layer type is not reused by the other, even for the same delta
    local, full = adapters if types[0] == "sliding_attention" else adapters[::-1]
    keys, delta, memo = torch.randn(1, 2, 5, 16), torch.full((1, 2, 5), -3), {}
    local.rotate(keys, delta, memo)
    assert torch.equal(full.rotate(keys, delta, memo), full.rotate(keys, delta))
    llama = rope_adapters(build("llama"))
    assert llama[0] is llama[1] and llama[0].layer_type is None


@pytest.mark.parametrize("arch", [*GEMMA3])
@pytest.mark.parametrize("chunk", [1, 7])
def test_gemma3_attention_sees_what_a_fresh_forward_of_the_kept_tokens_sees(arch, chunk):
    """Each forward attends like a fresh forward of the kept tokens plus the chunk at their cache slots: sliding
    layers lose the sinks once num_sink + window + q passes the window, full layers keep them. Layer 0's
    probabilities are equal (its q and k depend on the tokens and slots only); deeper layers' visible keys."""
    model = build(arch, attn="eager")
    num_sink, window, n = 4, 16, 60
    ids = tokens(n, seed=4)
    cache = SinkCache(model, num_sink=num_sink, window=window)
    crossed = 0
    with torch.no_grad():
        for t in range(0, n, chunk):
            q = min(chunk, n - t)
            out = model(ids[:, t:t + q], past_key_values=cache, use_cache=True, output_attentions=True)
            kept = kept_tokens(ids, cache.layers[0], t + q)
            assert kept.shape[1] == cache.layers[0].stored
            fresh = model(kept, output_attentions=True).attentions
            for layer, (got, want) in enumerate(zip(out.attentions, fresh)):
                want = want[:, :, -q:]
                assert torch.equal(got > 0, want > 0), (t, layer)
                if layer == 0:
                    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            crossed += kept.shape[1] > SLIDING
    assert crossed > 0 and cache.layers[0].evictions > 0


# ---- generate past the window ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_generate_runs_past_the_window_and_stays_bounded(arch):
    model = build(arch)
    prompt = tokens(10)
    cache = SinkCache(model, num_sink=4, window=16)
    out = model.generate(prompt, past_key_values=cache, max_new_tokens=60, do_sample=False, output_scores=True,
                         return_dict_in_generate=True)
    assert out.sequences.shape[1] == 70
    assert all(layer.stored <= 4 + 16 + 1 for layer in cache.layers)
    assert cache.get_seq_length() == 20
    # generate uses the cache's positions (not the absolute ones it derives from the mask): its logits are
    # those of a plain greedy loop over the same cache type
    loop_cache, ids, scores = SinkCache(model, num_sink=4, window=16), prompt, []
    with torch.no_grad():
        logits = model(prompt, past_key_values=loop_cache, use_cache=True).logits
        for _ in range(60):
            scores.append(logits[:, -1])
            nxt = logits[:, -1:].argmax(-1)
            ids = torch.cat([ids, nxt], dim=1)
            logits = model(nxt, past_key_values=loop_cache, use_cache=True).logits
    assert torch.equal(out.sequences, ids)
    torch.testing.assert_close(torch.stack(out.scores), torch.stack(scores), atol=1e-5, rtol=1e-5)


def test_beam_search_and_batches_keep_the_cache_in_sync():
    model = build("qwen2")
    prompt = torch.cat([tokens(8, 1), tokens(8, 2)])
    cache = SinkCache(model, num_sink=2, window=10)
    out = model.generate(prompt, past_key_values=cache, max_new_tokens=25, num_beams=2, do_sample=False)
    assert out.shape == (2, 33)
    layer = cache.layers[0]
    assert layer.keys.shape[0] == layer.written.shape[0] == layer.values.shape[0]
    assert layer.stored <= 13


# ---- attention-guided policies: scores through the seam == scores from eager attention maps --------------------
def _eager_reference(arch, policy_name, ids, num_sink, window, steps):
    """Replay the stream on an eager copy with output_attentions and build the policy's scores by hand."""
    model = build(arch, attn="eager")
    n_kv = model.config.num_key_value_heads
    rep = model.config.num_attention_heads // n_kv
    cache = SinkCache(model, num_sink=num_sink, window=window, policy=H2O() if policy_name == "h2o" else TOVA())
    history = []
    prompt = ids[:, :steps[0]]
    chunks = [prompt] + [ids[:, t:t + 1] for t in range(steps[0], ids.shape[1])]
    with torch.no_grad():
        for chunk in chunks:
            out = model(chunk, past_key_values=cache, use_cache=True, output_attentions=True)
            for layer, attn in zip(cache.layers, out.attentions):
                a = attn.float()                                                  # [B, H, q, K]
                if policy_name == "h2o":
                    add = a.sum(2).view(1, n_kv, rep, -1).mean(2)
                    old = layer.scores
                    layer.scores = add if old is None else old + add
                else:
                    layer.scores = a[:, :, -1].mean(1, keepdim=True)
                layer.observed = True
            history.append([layer.scores.clone() for layer in cache.layers])
    return history


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("policy_name", ["h2o", "tova"])
def test_policy_scores_through_seam_equal_eager_reference(arch, policy_name):
    num_sink, window, prompt_len, n = 2, 12, 20, 40
    ids = tokens(n, seed=3)
    reference = _eager_reference(arch, policy_name, ids, num_sink, window, [prompt_len])
    model = build(arch)
    cache = SinkCache(model, num_sink=num_sink, window=window, policy=policy_name)
    chunks = [ids[:, :prompt_len]] + [ids[:, t:t + 1] for t in range(prompt_len, n)]
    evicted = 0
    with torch.no_grad(), cache.observing(model):
        for step, chunk in enumerate(chunks):
            model(chunk, past_key_values=cache, use_cache=True)
            for layer, ref in zip(cache.layers, reference[step]):
                assert layer.scores.shape == ref.shape
                torch.testing.assert_close(layer.scores, ref, atol=1e-5, rtol=1e-4)
            evicted = cache.layers[0].evictions
    assert evicted > 0
    assert model.config._attn_implementation == "sdpa"


def test_tova_reference_from_explicit_softmax():
    """TOVA's last-row head-mean equals softmax(q k^T) of the last query, computed here from the layer's q and k."""
    model = build("llama")
    ids = tokens(30, seed=5)
    cache = SinkCache(model, num_sink=2, window=40, policy="tova")
    captured = {}
    attn0 = model.model.layers[0].self_attn

    def grab(module, args, kwargs, output):
        captured["h"] = kwargs.get("hidden_states", args[0] if args else None)
    handle = attn0.register_forward_hook(grab, with_kwargs=True)
    with torch.no_grad(), cache.observing(model):
        model(ids, past_key_values=cache, use_cache=True)
    handle.remove()
    h = captured["h"]
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    q = attn0.q_proj(h).view(1, 30, cfg.num_attention_heads, hd).transpose(1, 2)
    cos, sin = model.model.rotary_emb(h, torch.arange(30)[None])
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    q, _ = apply_rotary_pos_emb(q, q, cos, sin)
    k = repeat_kv(cache.layers[0].current_keys(), cfg.num_attention_heads // cfg.num_key_value_heads)
    probs = torch.softmax(q[:, :, -1:] @ k.transpose(-1, -2) * hd ** -0.5, dim=-1)     # last row: sees all keys
    torch.testing.assert_close(cache.layers[0].scores, probs[:, :, 0].mean(1, keepdim=True), atol=1e-5, rtol=1e-4)


def test_attention_policy_without_observation_is_refused():
    model = build("llama")
    cache = SinkCache(model, num_sink=2, window=8, policy="h2o")
    with pytest.raises(AttnlabError, match="observing"):
        stream(model, cache, tokens(15))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_snapkv_keeps_sinks_window_and_top_pooled_votes_of_eager_reference(arch):
    from attnlab.cache import SnapKV

    ids = tokens(60, seed=7)
    w, num_sink, window, prompt = 8, 2, 20, 50
    eager = build(arch, attn="eager")
    with torch.no_grad():
        attn = eager(ids[:, :prompt], output_attentions=True).attentions
    model = build(arch)
    cache = SinkCache(model, num_sink=num_sink, window=window, policy=SnapKV(window_size=w, kernel_size=5))
    with torch.no_grad(), cache.observing(model):
        model(ids[:, :prompt], past_key_values=cache, use_cache=True)
        assert cache.get_seq_length() == num_sink + window
        model(ids[:, prompt:prompt + 1], past_key_values=cache, use_cache=True)
        model(ids[:, prompt + 1:prompt + 2], past_key_values=cache, use_cache=True)
    for layer, a in zip(cache.layers, attn):
        assert layer.stored == num_sink + window + 2                # decoding grows again, as in the paper
        votes = a[:, :, -w:].sum(2).view(1, 2, 2, prompt).mean(2)[..., :prompt - w]      # GQA mean
        pooled = torch.nn.functional.avg_pool1d(votes.reshape(2, 1, -1), 5, stride=1, padding=2).view(1, 2, -1)
        pooled[..., :num_sink] = float("inf")
        free = window - w
        top = pooled.topk(num_sink + free, dim=-1).indices.sort(-1).values
        expected = torch.cat([top, torch.arange(prompt - w, prompt).expand(1, 2, w)], dim=-1)
        assert torch.equal(layer.written[..., :num_sink + window], expected)


# ---- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(window=0), "window"), (dict(window=-3), "window"), (dict(num_sink=-1), "num_sink"),
    (dict(window=300), "positions"), (dict(window=8, positions="absolute"), "positions"),
    (dict(window=8, policy="lru"), "policy"), (dict(num_sink=2, window=8, policy=H2O(recent=9)), "recent"),
])
def test_bad_input_is_one_line_error(kwargs, match):
    model = build("llama")
    with pytest.raises(AttnlabError, match=match) as info:
        SinkCache(model, **kwargs)
    assert "\n" not in str(info.value)


def test_unsupported_architecture_names_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256)).eval()
    with pytest.raises(AttnlabError, match="Llama, Qwen2.*Gemma") as info:
        SinkCache(gpt2, window=8)
    assert "\n" not in str(info.value)


def test_mistral_sliding_window_smaller_than_cache_is_refused():
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(num_key_value_heads=1, sliding_window=16, **COMMON)).eval()
    with pytest.raises(AttnlabError, match="sliding window"):
        SinkCache(model, num_sink=4, window=16)


def test_gemma3_original_positions_are_refused_and_cache_positions_may_pass_the_sliding_window():
    model = build("gemma3")
    with pytest.raises(AttnlabError, match="positions='cache'") as info:
        SinkCache(model, num_sink=4, window=8, positions="original")
    assert "\n" not in str(info.value)
    SinkCache(model, num_sink=4, window=4 * SLIDING)      # the full attention layers keep the sinks


def test_crop_and_padding_are_refused():
    model = build("llama")
    cache = SinkCache(model, num_sink=2, window=8)
    stream(model, cache, tokens(5))
    with pytest.raises(AttnlabError, match="cropped"):
        cache.crop(-1)
    with pytest.raises(AttnlabError, match="padded"):
        model(tokens(3), attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1]]), past_key_values=cache)
