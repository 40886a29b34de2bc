"""Steered logits equal an independent eager reference applying each paper's post-softmax formula.

attnlab steers a left-padded batch with ``model.generate`` (prefill and several cached decode steps);
the reference runs the full generated sequence without cache through eager attention edited by hand.
"""
import pytest
import torch

import attnlab
from archs import build
from reference import reweight, run_reference

PROMPTS = ["Previously the capital of Zorland was Paris, but now the capital of Zorland is Rome. The capital is",
           "Records: apple=482. river=17. Query: river? Answer:"]
EMPHASIS = [["but now the capital of Zorland is Rome."], ["river=17."]]
STEPS = 3
# mistral and gemma3-random have sliding windows (8 tokens) shorter than the prompts: their caches drop keys
ARCHS = ["tiny", "llama", "qwen2", "gemma", "mistral", "gemma3-random", "gpt2", "smollm2", "gemma3"]  # last two: real LMs


def token_sets(tok, prompts, pieces):
    """Per prompt (left-padded to a common width): real-token mask and emphasised-token mask, by offsets."""
    encs = [tok(p, return_offsets_mapping=True) for p in prompts]
    width = max(len(e["input_ids"]) for e in encs)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    span = torch.zeros_like(valid)
    for b, (enc, p) in enumerate(zip(encs, prompts)):
        shift = width - len(enc["input_ids"])
        valid[b, shift:] = True
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


def generate(model, tok, method):
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with attnlab.steer(model, method, tokenizer=tok):
        out = model.generate(**enc, max_new_tokens=STEPS, do_sample=False, return_dict_in_generate=True,
                             output_logits=True, pad_token_id=tok.pad_token_id)
    seq = out.sequences
    mask = torch.cat([enc["attention_mask"], torch.ones(seq.shape[0], STEPS, dtype=torch.long)], dim=1)
    return enc, seq, mask, torch.stack(out.logits, dim=1)                       # logits [B, STEPS, V]


def compare(model, seq, mask, steered_logits, edit, head_scale=None):
    ref = run_reference(model, seq, mask, edit, head_scale)
    p = seq.shape[1] - STEPS
    ref_steps = ref[:, p - 1:p - 1 + STEPS]
    # float32 through 30 layers vs a float64 reference: 1e-4, or 1e-5 of the largest logit on real models
    assert (ref_steps - steered_logits).abs().max() <= max(1e-4, 1e-5 * float(ref_steps.abs().max()))


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
    compare(model, seq, mask, logits, edit)


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


def test_spotlight(model_tok):
    model, tok = model_tok
    psi = 0.3
    if refused_past_a_sliding_window(model, tok, attnlab.SpotLight(EMPHASIS, psi=psi)):
        return
    enc, seq, mask, logits = generate(model, tok, attnlab.SpotLight(EMPHASIS, psi=psi))
    valid, span = token_sets(tok, PROMPTS, EMPHASIS)
    p_len = valid.shape[1]

    def edit(attn, layer):
        # The reference sees the whole sequence at once; SpotLight's p is per forward step: the prompt
        # rows together at prefill, then each generated row alone.
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
            for b in range(attn.shape[0]):
                if p[b] < psi:
                    factor = torch.where(g[b], psi / max(float(p[b]), 1e-6), 1.0)
                    out[b, :, rows] = reweight(a[b], factor)
        return out
    compare(model, seq, mask, logits, edit)


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

    enc, seq, mask, logits = generate(model, tok, attnlab.Temperature("L1", temperature=2.0))

    def temper(attn, layer):
        if layer != 1:
            return attn
        # softmax(s / T) = A^(1/T) renormalised, over the keys each row may see
        return reweight(attn, attn.clamp(min=1e-300) ** (1 / 2.0 - 1) * (attn > 0))
    compare(model, seq, mask, logits, temper)


def test_edits_compose(model_tok):
    """PASTA and ZeroTuning in one block: their factors multiply (biases add)."""
    model, tok = model_tok
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
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
    assert (ref - both)[mask.bool()].abs().max() <= 1e-4
