"""Steered logits equal an independent eager reference applying each paper's post-softmax formula.

attnlab steers a left-padded batch with ``model.generate`` (prefill and several cached decode steps);
the reference runs the full generated sequence without cache through eager attention edited by hand.
Every steered output must also differ from the unsteered one by far more than the tolerance, so an edit
that does nothing cannot pass.
"""
import math

import pytest
import torch

import attnlab
from archs import build
from reference import reweight, run_reference

def first_token_out_of_every_window(model) -> bool:
    """Mistral slides in every layer (window 8): the compared rows cannot see the first token at all, so editing
    its weight rightly changes nothing there."""
    return model.config.model_type == "mistral"


PROMPTS = ["Previously the capital of Zorland was Paris, but now the capital of Zorland is Rome. The capital is",
           "Records: apple=482. river=17. Query: river? Answer:"]
EMPHASIS = [["but now the capital of Zorland is Rome."], ["river=17."]]
STEPS = 3
# mistral and gemma3-random have sliding windows (8 tokens) shorter than the prompts: their caches drop keys
ARCHS = ["tiny", "llama", "qwen2", "gemma", "mistral", "gemma3-random", "gpt2", "smollm2", "gemma3"]  # last two: real LMs


def token_sets(tok, prompts, pieces, left=True):
    """Per prompt (padded to a common width, on the left or right): real-token mask and emphasised-token mask,
    by offsets."""
    encs = [tok(p, return_offsets_mapping=True) for p in prompts]
    width = max(len(e["input_ids"]) for e in encs)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    span = torch.zeros_like(valid)
    for b, (enc, p) in enumerate(zip(encs, prompts)):
        shift = width - len(enc["input_ids"]) if left else 0
        valid[b, shift:shift + len(enc["input_ids"])] = True
        for piece in pieces[b]:
            a = p.index(piece)
            for t, (s, e) in enumerate(enc["offset_mapping"]):
                if e > s and s < a + len(piece) and e > a:
                    span[b, shift + t] = True
    return valid, span


@pytest.fixture(scope="module", params=ARCHS)
def model_tok(request, tiny):
    if request.param in ("tiny", "smollm2", "gemma3"):
        return request.getfixturevalue(request.param)
    return build(request.param.removesuffix("-random"), len(tiny[1])), tiny[1]


def generate(model, tok, *methods):
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")    # the shared tokenizer untouched
    with attnlab.steer(model, *methods, tokenizer=tok):
        out = model.generate(**enc, max_new_tokens=STEPS, do_sample=False, return_dict_in_generate=True,
                             output_logits=True, pad_token_id=tok.pad_token_id)
    seq = out.sequences
    mask = torch.cat([enc["attention_mask"], torch.ones(seq.shape[0], STEPS, dtype=torch.long)], dim=1)
    return enc, seq, mask, torch.stack(out.logits, dim=1)                       # logits [B, STEPS, V]


EFFECT = 30    # a steered output must differ from the unsteered one by more than EFFECT x the tolerance


def unsteered_steps(model, seq, mask):
    """The unsteered logits at the compared positions: the same sequence through the identity-edited reference."""
    p = seq.shape[1] - STEPS
    return run_reference(model, seq, mask, lambda a, l: a)[:, p - 1:p - 1 + STEPS]


def compare(model, seq, mask, steered_logits, edit, head_scale=None, effect=True):
    """Steered logits equal the reference's; unless ``effect`` is False they also differ from the unsteered ones
    by far more than the tolerance. Returns the tolerance and the unsteered logits."""
    ref = run_reference(model, seq, mask, edit, head_scale)
    p = seq.shape[1] - STEPS
    ref_steps = ref[:, p - 1:p - 1 + STEPS]
    # float32 through 30 layers vs a float64 reference: 1e-4, or 1e-5 of the largest logit on real models
    tol = max(1e-4, 1e-5 * float(ref_steps.abs().max()))
    assert (ref_steps - steered_logits).abs().max() <= tol
    plain = unsteered_steps(model, seq, mask)
    if effect:
        assert (plain - steered_logits).abs().max() > EFFECT * tol, "the steering changed (almost) nothing"
    return tol, plain


def prompt_keys(valid, k_len):
    return torch.cat([valid, torch.zeros(valid.shape[0], k_len - valid.shape[1], dtype=torch.bool)], 1)


def heads_factor(n_heads, heads, layer):
    f = torch.zeros(n_heads, dtype=torch.bool)
    for l, h in heads:
        if l == layer:
            f[h] = True
    return f


def test_pasta_exclude(model_tok):
    model, tok = model_tok
    heads = [(0, 1), (1, 0), (1, 3)]
    enc, seq, mask, logits = generate(model, tok, attnlab.PASTA(EMPHASIS, heads=heads, alpha=0.01))
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)

    def edit(attn, layer):
        k = attn.shape[-1]
        downweight = prompt_keys(valid & ~span, k)[:, None, None, :] & heads_factor(attn.shape[1], heads, layer)[
            None, :, None, None]
        return reweight(attn, torch.where(downweight, 0.01, 1.0))
    compare(model, seq, mask, logits, edit)


def test_zerotuning(model_tok):
    model, tok = model_tok
    enc, seq, mask, logits = generate(model, tok, attnlab.ZeroTuning(gamma=3.0, heads="L0,L1H2"))
    valid, _ = token_sets(tok, PROMPTS, EMPHASIS)
    first = valid.int().argmax(1)

    def edit(attn, layer):
        factor = torch.ones_like(attn)
        heads = range(attn.shape[1]) if layer == 0 else ([2] if layer == 1 else [])
        for b in range(attn.shape[0]):
            for h in heads:
                factor[b, h, :, first[b]] = 3.0
        return reweight(attn, factor)
    compare(model, seq, mask, logits, edit, effect=not first_token_out_of_every_window(model))


def test_instaboost(model_tok):
    model, tok = model_tok
    enc, seq, mask, logits = generate(model, tok, attnlab.InstABoost(EMPHASIS, m=7.0))
    _, span = token_sets(tok, PROMPTS, EMPHASIS)

    def edit(attn, layer):
        return reweight(attn, torch.where(prompt_keys(span, attn.shape[-1])[:, None, None, :], 7.0, 1.0))
    compare(model, seq, mask, logits, edit)


def refused_past_a_sliding_window(model, tok, method) -> bool:
    """Dynamic methods are refused (one line) at decode steps where a sliding layer's cache dropped keys."""
    window = getattr(model.config, "sliding_window", None)
    if window is None or window > 64:
        return False
    with pytest.raises(attnlab.AttnlabError, match="cannot follow layer .* sliding window"):
        generate(model, tok, method)
    return True


def spotlight_reference(valid, span, psi, shares):
    """SpotLight applied to eager maps, per forward step: the prompt rows together at prefill, then each generated
    row alone. Appends each (layer, step) ``p`` (``[B]``, the span's share of the unsteered attention) to
    ``shares``; rows with ``p < psi`` get the span's weights times ``psi / p``, renormalised."""
    p_len = valid.shape[1]

    def edit(attn, layer):
        out = attn.clone()
        k = attn.shape[-1]
        g = prompt_keys(span, k)
        steps = [range(0, p_len)] + [range(p_len + t, p_len + t + 1) for t in range(k - p_len)]
        for rows in steps:
            rows = list(rows)
            real = torch.cat([valid, torch.ones(valid.shape[0], k - p_len, dtype=torch.bool)], 1)[:, rows]
            a = attn[:, :, rows]
            mass = (a * g[:, None, None, :]).sum(-1)                          # [B, H, r]
            p = (mass * real[:, None]).sum((1, 2)) / (real.sum(1) * attn.shape[1])
            shares.append((layer, rows[0], p.clone()))
            for b in range(attn.shape[0]):
                if p[b] < psi:
                    factor = torch.where(g[b], psi / max(float(p[b]), 1e-6), 1.0)
                    out[b, :, rows] = reweight(a[b], factor)
        return out
    return edit


def unsteered_shares(model, tok, seq, mask, valid, span):
    """SpotLight's ``p`` of every (layer, step, row) on the unsteered eager maps of ``seq``."""
    shares = []
    run_reference(model, seq, mask, spotlight_reference(valid, span, 0.0, shares))   # psi 0: nothing steered
    return shares


def test_spotlight_steers_rows_below_psi(model_tok):
    """psi is chosen, from the unsteered eager maps, above some row's span share at layer 0's prefill (whose input no
    steering changes): the p < psi branch must run there."""
    model, tok = model_tok
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)
    p_len = valid.shape[1]
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    mask0 = enc["attention_mask"]
    first_layer = [p for layer, row, p in unsteered_shares(model, tok, enc["input_ids"], mask0, valid, span)
                   if layer == 0 and row == 0][0]
    psi = min(0.95, float(first_layer.max()) + 0.05)
    assert (first_layer < psi).any()
    if refused_past_a_sliding_window(model, tok, attnlab.SpotLight(EMPHASIS, psi=psi)):
        return
    enc, seq, mask, logits = generate(model, tok, attnlab.SpotLight(EMPHASIS, psi=psi))
    shares = []
    compare(model, seq, mask, logits, spotlight_reference(valid, span, psi, shares))
    assert any(layer == 0 and row == 0 and (p < psi).any() for layer, row, p in shares)
    assert {row for _, row, _ in shares} == {0} | {p_len + t for t in range(STEPS)}


def test_spotlight_does_nothing_above_psi(model_tok):
    """psi below every (layer, step, row) span share of the unsteered maps: the branch must not run, and the
    steered logits are the unsteered ones."""
    model, tok = model_tok
    if model.config.model_type == "gemma3_text" and model.config.num_hidden_layers > 2:
        pytest.skip("four full runs of Gemma 3 270M: the other eight models cover this branch")
    if refused_past_a_sliding_window(model, tok, attnlab.SpotLight(EMPHASIS, psi=0.5)):
        return
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)
    enc, seq, mask, plain_logits = generate(model, tok, attnlab.Edit(bias=0.0))
    lowest = min(float(p.min()) for _, _, p in unsteered_shares(model, tok, seq, mask, valid, span))
    assert lowest > 1e-3
    psi = lowest / 2
    enc, seq2, mask, logits = generate(model, tok, attnlab.SpotLight(EMPHASIS, psi=psi))
    assert torch.equal(seq2, seq)
    shares = []
    tol, plain = compare(model, seq, mask, logits, spotlight_reference(valid, span, psi, shares), effect=False)
    assert not any((p < psi).any() for _, _, p in shares)
    assert (logits - plain).abs().max() <= tol
    assert (logits - plain_logits).abs().max() <= tol


def test_act(model_tok):
    model, tok = model_tok
    beta, thr = 0.4, 0.1
    if refused_past_a_sliding_window(model, tok, attnlab.ACT(beta=beta, threshold=thr, heads="L1")):
        return
    enc, seq, mask, logits = generate(model, tok, attnlab.ACT(beta=beta, threshold=thr, heads="L1"))
    valid, _ = token_sets(tok, PROMPTS, EMPHASIS)
    p_len = valid.shape[1]
    first = valid.int().argmax(1)

    def edit(attn, layer):
        if layer != 1:
            return attn
        out = attn.clone()
        for b in range(attn.shape[0]):
            rows = valid[b].nonzero().flatten()                               # prompt queries only (prefill)
            a = attn[b][:, rows][:, :, :p_len]                                # [H, r, P]
            seen = torch.zeros(p_len)
            for j in range(p_len):
                seen[j] = sum(1 for i in rows.tolist() if i >= j)
            c = a.sum(1) / seen.clamp(min=1)                                  # ACT: mean received attention
            sinks = (c > thr) & valid[b][None]
            sinks[:, first[b]] = False
            for h in range(attn.shape[1]):
                s = torch.zeros(attn.shape[-1], dtype=torch.bool)
                s[:p_len] = sinks[h]
                m = attn[b, h][:, s].sum(-1, keepdim=True).clamp(max=1 - 1e-6)
                out[b, h] = torch.where(s, beta * attn[b, h], attn[b, h] * (1 - beta * m) / (1 - m))
        return out
    compare(model, seq, mask, logits, edit)


def test_head_ablation_and_temperature(model_tok):
    model, tok = model_tok
    method_scale = attnlab.HeadScale("L0H1,L1H2", scale=0.0)
    enc, seq, mask, logits = generate(model, tok, method_scale)

    def scale(layer):
        s = torch.ones(model.config.num_attention_heads)
        if layer in (0, 1):
            s[1 if layer == 0 else 2] = 0.0
        return s.double()
    compare(model, seq, mask, logits, lambda a, l: a, head_scale=scale)

    # sharpening (T < 1): random-init attention is near uniform, so T = 2 would change their logits by ~1e-3 only
    enc, seq, mask, logits = generate(model, tok, attnlab.Temperature("L1", temperature=0.2))

    def temper(attn, layer):
        if layer != 1:
            return attn
        # softmax(s / T) = A^(1/T) renormalised, over the keys each row may see
        return reweight(attn, attn.clamp(min=1e-300) ** (1 / 0.2 - 1) * (attn > 0))
    compare(model, seq, mask, logits, temper)


def test_edits_compose(model_tok):
    """PASTA and ZeroTuning in one block: their factors multiply (biases add)."""
    model, tok = model_tok
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with attnlab.steer(model, attnlab.PASTA(EMPHASIS, heads="L1", alpha=0.1), attnlab.ZeroTuning(0.5, heads="L1"),
                       tokenizer=tok):
        with torch.no_grad():
            both = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)
    first = valid.int().argmax(1)

    def edit(attn, layer):
        if layer != 1:
            return attn
        factor = torch.where((valid & ~span)[:, None, None, :], 0.1, 1.0).expand_as(attn).clone()
        for b in range(attn.shape[0]):
            factor[b, :, :, first[b]] *= 0.5
        return reweight(attn, factor)
    ref = run_reference(model, ids, mask, edit)
    tol = max(1e-4, 1e-5 * float(ref.abs().max()))
    assert (ref - both)[mask.bool()].abs().max() <= tol
    plain = run_reference(model, ids, mask, lambda a, l: a)
    assert (plain - both)[mask.bool()].abs().max() > EFFECT * tol


# --- more methods and selectors, on fewer models (each sliding-window family included) --------------------------

SMALL = ["tiny", "llama", "mistral", "gemma3-random", "gpt2", "smollm2"]


@pytest.fixture(scope="module", params=SMALL)
def small_model_tok(request, tiny):
    if request.param in ("tiny", "smollm2"):
        return request.getfixturevalue(request.param)
    return build(request.param.removesuffix("-random"), len(tiny[1])), tiny[1]


def masks_over(valid, span, k):
    """Key and query masks over the full reference sequence of ``k`` positions (prompt first, then generated)."""
    p_len = valid.shape[1]
    gen = torch.arange(k) >= p_len                                        # [K]
    return dict(prompt_keys=prompt_keys(valid, k), span_keys=prompt_keys(span, k),
                generated=gen[None].expand(valid.shape[0], k), prompt_rows=(~gen)[None].expand(valid.shape[0], k),
                span_rows=prompt_keys(span, k), first=valid.int().argmax(1))


@pytest.mark.parametrize("mode", ["include", "generation"])
def test_pasta_include_and_generation_modes(small_model_tok, mode):
    model, tok = small_model_tok
    heads = [(0, 1), (1, 0), (1, 3)]
    alpha = 0.05
    enc, seq, mask, logits = generate(model, tok, attnlab.PASTA(EMPHASIS, heads=heads, alpha=alpha, mode=mode))
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)

    def edit(attn, layer):
        m = masks_over(valid, span, attn.shape[-1])
        on_heads = heads_factor(attn.shape[1], heads, layer)[None, :, None, None]
        if mode == "include":           # span keys times 1 / alpha (generated keys untouched)
            factor = torch.where(m["span_keys"][:, None, None, :] & on_heads, 1 / alpha, 1.0)
        else:                           # every real prompt key times alpha (generated keys relatively emphasised)
            factor = torch.where(m["prompt_keys"][:, None, None, :] & on_heads, alpha, 1.0)
        return reweight(attn, factor)
    compare(model, seq, mask, logits, edit)


FROM_START = [["Previously the capital of Zorland"], ["river=17."]]   # on smollm2 (no BOS) the first span holds token 0


@pytest.mark.parametrize("mode", ["exclude", "generation"])
def test_pasta_keep_sink(small_model_tok, mode):
    """``sink="keep"``: the first real token gets no bias, also when it lies in the emphasised span (exclude mode:
    it is not boosted above the span either); every other key is steered as in the paper."""
    model, tok = small_model_tok
    heads = [(0, 1), (1, 0), (1, 3)]
    alpha = 0.05
    enc, seq, mask, logits = generate(model, tok, attnlab.PASTA(FROM_START, heads=heads, alpha=alpha, mode=mode,
                                                                sink="keep"))
    valid, span = token_sets(tok, PROMPTS, FROM_START)

    def edit(attn, layer):
        m = masks_over(valid, span, attn.shape[-1])
        first = torch.zeros_like(m["prompt_keys"])
        first[torch.arange(first.shape[0]), m["first"]] = True
        down = m["prompt_keys"] & ~first & (~m["span_keys"] if mode == "exclude" else True)
        on_heads = heads_factor(attn.shape[1], heads, layer)[None, :, None, None]
        return reweight(attn, torch.where(down[:, None, None, :] & on_heads, alpha, 1.0))
    compare(model, seq, mask, logits, edit)


def test_zerotuning_per_head_gamma(small_model_tok):
    model, tok = small_model_tok
    gamma = {(0, 1): 6.0, (1, 2): 0.25, (1, 0): 3.0}
    enc, seq, mask, logits = generate(model, tok, attnlab.ZeroTuning(gamma=gamma))
    valid, _ = token_sets(tok, PROMPTS, EMPHASIS)
    first = valid.int().argmax(1)

    def edit(attn, layer):
        factor = torch.ones_like(attn)
        for (l, h), g in gamma.items():
            if l == layer:
                for b in range(attn.shape[0]):
                    factor[b, h, :, first[b]] = g
        return reweight(attn, factor)
    compare(model, seq, mask, logits, edit, effect=not first_token_out_of_every_window(model))


def test_edit_query_selectors(small_model_tok):
    """``queries="span:NAME"`` biases only the span's own rows; ``queries="prompt"`` only the prompt's rows.
    (InstABoost with M = 1, a zero bias, only names the span.)"""
    model, tok = small_model_tok
    on_span = attnlab.Edit(heads="L0", keys="first", queries="span:instruction", bias=math.log(8.0))
    on_prompt = attnlab.Edit(heads="L1H0-1", keys="span:instruction", queries="prompt", bias=math.log(6.0))
    enc, seq, mask, logits = generate(model, tok, attnlab.InstABoost(EMPHASIS, m=1.0), on_span, on_prompt)
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)

    def edit(attn, layer):
        m = masks_over(valid, span, attn.shape[-1])
        factor = torch.ones_like(attn)
        if layer == 0:
            for b in range(attn.shape[0]):
                factor[b, :, m["span_rows"][b], m["first"][b]] = 8.0
        if layer == 1:
            rows = m["prompt_rows"][:, None, :, None] & m["span_keys"][:, None, None, :]
            factor[:, :2] = torch.where(rows, 6.0, 1.0).expand(-1, 2, -1, -1)
        return reweight(attn, factor)
    tol, plain = compare(model, seq, mask, logits, edit)
    assert (logits[:, 0] - plain[:, 0]).abs().max() > EFFECT * tol      # the prompt's last row was steered


def test_edit_generated_keys(small_model_tok):
    """``keys="generated"``: at prefill there are none (the first logits are unsteered); at decode steps the keys
    after the prompt (the current token included) are biased."""
    model, tok = small_model_tok
    enc, seq, mask, logits = generate(model, tok, attnlab.Edit(heads="all", keys="generated", bias=math.log(20.0)))
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)

    def edit(attn, layer):
        m = masks_over(valid, span, attn.shape[-1])
        return reweight(attn, torch.where(m["generated"][:, None, None, :], 20.0, 1.0))
    tol, plain = compare(model, seq, mask, logits, edit)
    assert (logits[:, 0] - plain[:, 0]).abs().max() <= tol
    assert (logits[:, 1:] - plain[:, 1:]).abs().max() > EFFECT * tol


def test_edit_temperature_and_output_scale_on_generated_queries(small_model_tok):
    """Temperature and head output scale restricted to generated queries: the prefill logits are unsteered."""
    model, tok = small_model_tok
    sharpen = attnlab.Edit(heads="L0", queries="generated", temperature=0.25)
    ablate = attnlab.Edit(heads="L1H1-2", queries="generated", output_scale=0.0)
    enc, seq, mask, logits = generate(model, tok, sharpen, ablate)
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)
    n_heads = model.config.num_attention_heads

    def edit(attn, layer):
        if layer != 0:
            return attn
        gen = masks_over(valid, span, attn.shape[-1])["generated"][:, None, :, None]
        # softmax(s / T) = A^(1/T) renormalised over the keys each row may see
        return reweight(attn, torch.where(gen, attn.clamp(min=1e-300) ** (1 / 0.25 - 1) * (attn > 0), 1.0))

    def scale(layer):
        s = torch.ones(1, n_heads, seq.shape[1], 1, dtype=torch.float64)
        if layer == 1:
            s[:, 1:3, valid.shape[1]:] = 0.0
        return s
    tol, plain = compare(model, seq, mask, logits, edit, head_scale=scale)
    assert (logits[:, 0] - plain[:, 0]).abs().max() <= tol
    assert (logits[:, 1:] - plain[:, 1:]).abs().max() > EFFECT * tol


# --- an encoder --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["bert-random", "minilm"])
def encoder_tok(request, minilm):
    if request.param == "minilm":
        return minilm
    return build("bert", len(minilm[1])), minilm[1]


def test_steering_an_encoder(encoder_tok):
    """BERT (bidirectional): PASTA, per-head ZeroTuning and a head ablation in one block, on the last hidden
    states of a single forward. MiniLM's tokenizer is uncased, so the spans are marked (``Spans.encode``)."""
    model, tok = encoder_tok
    marked = ["Previously the capital of Zorland was Paris, <<but now the capital of Zorland is Rome.>> The capital is",
              "Records: apple=482. <<river=17.>> Query: river? Answer:"]
    inputs = attnlab.Spans.encode(tok, marked)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)                 # left padding: positions from the first real token
    heads = [(0, 1), (1, 0), (1, 3)]
    methods = [attnlab.PASTA(inputs, heads=heads, alpha=0.01), attnlab.ZeroTuning(gamma={(1, 2): 5.0}),
               attnlab.HeadScale("L0H3", scale=0.0)]
    with attnlab.steer(model, *methods, tokenizer=tok):
        with torch.no_grad():
            steered = model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
    valid, span = token_sets(tok, inputs.texts, EMPHASIS)
    assert torch.equal(valid, mask.bool()) and span.any(1).all()
    first = valid.int().argmax(1)

    def edit(attn, layer):
        down = (valid & ~span)[:, None, None, :] & heads_factor(attn.shape[1], heads, layer)[None, :, None, None]
        factor = torch.where(down, 0.01, 1.0).expand_as(attn).clone()
        if layer == 1:
            for b in range(attn.shape[0]):
                factor[b, 2, :, first[b]] *= 5.0
        return reweight(attn, factor)

    def scale(layer):
        s = torch.ones(model.config.num_attention_heads, dtype=torch.float64)
        if layer == 0:
            s[3] = 0.0
        return s
    ref = run_reference(model, ids, mask, edit, head_scale=scale)
    plain = run_reference(model, ids, mask, lambda a, l: a)
    real = mask.bool()
    tol = max(1e-4, 1e-5 * float(ref[real].abs().max()))
    assert (ref - steered)[real].abs().max() <= tol
    assert (plain - steered)[real].abs().max() > EFFECT * tol


@pytest.mark.parametrize("arch", ["mistral", "gemma3"])
def test_dynamic_steering_of_a_prompt_longer_than_the_sliding_window(arch, tiny):
    """SpotLight in one forward over prompts longer than the window (8): allowed (only decode steps past the window
    are refused), and exact on the sliding layers, whose rows see only the last 8 keys."""
    tok = tiny[1]
    model = build(arch, len(tok))
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert mask.sum(1).min() > 2 * model.config.sliding_window
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)
    psi = 0.9                                                 # above any share a window of 8 leaves on the span
    with attnlab.steer(model, attnlab.SpotLight(EMPHASIS, psi=psi), tokenizer=tok):
        with torch.no_grad():
            steered = model(input_ids=ids, attention_mask=mask,
                            position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    shares = []
    ref = run_reference(model, ids, mask, spotlight_reference(valid, span, psi, shares))
    plain = run_reference(model, ids, mask, lambda a, l: a)
    real = mask.bool()
    tol = max(1e-4, 1e-5 * float(ref[real].abs().max()))
    assert all((p < psi).all() for _, _, p in shares)
    assert (ref - steered)[real].abs().max() <= tol
    assert (plain - steered)[real].abs().max() > EFFECT * tol
