"""Every probe against an independent eager computation (``output_attentions=True``), text by text.

attnlab runs the texts as one padded batch (left padding for causal models, right for BERT); the
reference runs each text alone through eager attention and applies the metric's formula by hand.
"""
import pytest
import torch

from archs import build
from attnlab.collect import collect
from attnlab.sinks import hidden_sinks, sink_ratio

TEXTS = ["The lighthouse keeper climbed the stairs at dusk and lit the lamp.", "A short one, the end.",
         "Wind from the west, a low bank of cloud; the sea calm."]
ARCHS = ["llama", "mistral", "gemma3", "gpt2", "bert"]
SPAN = "the"


def can_see(arch, model, n):
    """``[layers, n, n]`` bool: which keys each query may attend to in each layer, from the architecture's definition
    (Mistral: every layer slides; Gemma 3: the layers ``layer_types`` marks as sliding)."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    layers = []
    for layer in range(model.config.num_hidden_layers):
        if arch == "bert":
            layers.append(torch.ones(n, n, dtype=torch.bool))
            continue
        allowed = j <= i
        sliding = arch == "mistral" or arch == "gemma3" and model.config.layer_types[layer] == "sliding_attention"
        if sliding:
            allowed &= j > i - model.config.sliding_window
        layers.append(allowed)
    return torch.stack(layers)


def eager_maps(model, tok, text):
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            enc = tok(text, return_tensors="pt")
            out = model(**enc, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    return torch.stack([a[0] for a in out.attentions]).double()  # [L, H, n, n]


@pytest.fixture(scope="module", params=ARCHS)
def setup(request, tiny, minilm):
    arch = request.param
    tok = minilm[1] if arch == "bert" else tiny[1]
    model = build(arch, len(tok))
    got = collect(model, tok, TEXTS, probes=("attention_maps", "first_token_mass", "received_attention", "entropy",
                                              "normalized_entropy"), spans={"the": SPAN}, batch_size=3)
    refs = [eager_maps(model, tok, t) for t in TEXTS]
    return arch, model, tok, got, refs


def test_full_maps_equal_eager(setup):
    _, _, _, got, refs = setup
    for mine, ref in zip(got.stats["attention_maps"], refs):
        assert mine.shape == ref.shape
        assert (mine - ref).abs().max() <= 1e-5


def test_first_token_mass(setup):
    arch, model, _, got, refs = setup
    for mine, A in zip(got.stats["first_token_mass"], refs):
        n = A.shape[-1]
        queries = can_see(arch, model, n)[:, :, 0] & (torch.arange(n) != 0)            # [L, n]
        ref = torch.stack([A[l][:, queries[l], 0].mean(-1) for l in range(A.shape[0])])
        assert (mine - ref).abs().max() <= 1e-5


def test_received_attention_is_gu_alpha(setup):
    arch, model, _, got, refs = setup
    for mine, A in zip(got.stats["received_attention"], refs):
        allowed = can_see(arch, model, A.shape[-1]).double()
        ref = A.sum(2) / allowed.sum(1)[:, None, :]          # (1 / #queries seeing k) * sum_i A[i, k]
        assert (mine - ref).abs().max() <= 1e-5


def test_entropy(setup):
    arch, model, _, got, refs = setup
    for mine, mine_norm, A in zip(got.stats["entropy"], got.stats["normalized_entropy"], refs):
        rows = -(A * torch.log(A.clamp_min(1e-30))).sum(-1)   # [L, H, n]
        assert (mine - rows.mean(-1)).abs().max() <= 1e-5
        n_keys = can_see(arch, model, A.shape[-1]).sum(-1).double()                   # [L, n]
        for l in range(A.shape[0]):
            keep = n_keys[l] > 1
            assert (mine_norm[l] - (rows[l][:, keep] / n_keys[l][keep].log()).mean(-1)).abs().max() <= 1e-5


def test_span_mass(setup):
    arch, model, tok, got, refs = setup
    for text, mine, A in zip(TEXTS, got.stats["span_mass:the"], refs):
        enc = tok(text, return_offsets_mapping=True)
        start = text.index(SPAN)
        span = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < start + len(SPAN) and e > start]
        queries = can_see(arch, model, A.shape[-1])[:, :, span].any(-1)               # [L, n]
        ref = torch.stack([A[l][:, :, span].sum(-1)[:, queries[l]].mean(-1) for l in range(A.shape[0])])
        assert (mine - ref).abs().max() <= 1e-5


def test_hidden_sinks_follow_act(setup):
    arch, model, _, got, refs = setup
    if arch != "llama":
        pytest.skip("ACT's formula is for causal full attention")
    found = 0
    for received, A in zip(got.stats["received_attention"], refs):
        n = A.shape[-1]
        c = A.sum(2) / torch.arange(n, 0, -1).double()            # ACT: c_j = sum_i A_ij / (n - j)
        ref = {(l, h, j) for l, h, j in (c > 0.1).nonzero().tolist() if j > 0}
        assert {(s["layer"], s["head"], s["token"]) for s in hidden_sinks(received, 0.1)} == ref
        found += len(ref)
    assert found > 0


@pytest.mark.parametrize("epsilon", [0.3, 0.6])
def test_sink_ratio_on_a_model_with_sinks(smollm2, epsilon):
    """Gu et al.'s Sink_1^epsilon per layer, on SmolLM2 (real attention sinks), from eager maps by hand."""
    model, tok = smollm2
    texts = TEXTS[:2]
    got = collect(model, tok, texts, probes=("received_attention",), batch_size=2)
    ratios = []
    for text, received in zip(texts, got.stats["received_attention"]):
        A = eager_maps(model, tok, text)                          # [L, H, n, n]
        n = A.shape[-1]
        alpha_first = A[:, :, :, 0].sum(-1) / n                   # Gu: 1/(T-k+1) sum_{i>=k} A[i,k], k = 1
        assert (alpha_first - epsilon).abs().min() > 1e-4         # no head on the threshold itself
        ref = 100.0 * (alpha_first > epsilon).double().mean(-1)   # [L]: percent of heads
        assert torch.allclose(sink_ratio(received, epsilon).double(), ref)
        ratios.append(ref)
    ratios = torch.stack(ratios)
    assert ratios.max() == 100.0 and ratios.mean() > 20.0      # sinks are there: not 0 compared with 0
    assert ratios.min() < 100.0                                # nor 100 with 100 everywhere


def test_results_do_not_depend_on_batching(tiny):
    model, tok = tiny
    together = collect(model, tok, TEXTS, probes=("first_token_mass", "received_attention"), batch_size=3)
    alone = collect(model, tok, TEXTS, probes=("first_token_mass", "received_attention"), batch_size=1)
    for name in ("first_token_mass", "received_attention"):
        for a, b in zip(together.stats[name], alone.stats[name]):
            assert (a - b).abs().max() <= 1e-5


def test_chunking_does_not_change_results(tiny):
    from attnlab import seam
    from attnlab.collect import ModelShape, encode
    from attnlab.context import TokenContext
    from attnlab.plan import Plan
    from attnlab.probes.attention import ReceivedAttention

    model, tok = tiny
    enc = encode(tok, TEXTS, ModelShape.of(model))
    results = []
    for chunk in (2 ** 24, 64):  # one chunk vs. about one query per chunk
        probe = ReceivedAttention()
        with seam.attached(model, Plan([probe], chunk_elements=chunk), TokenContext(enc.attention_mask.bool())):
            with torch.no_grad():
                model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        results.append(probe.result())
    assert (results[0] - results[1]).abs().max() <= 1e-6


@pytest.mark.parametrize("last", [1, 5])
def test_observe_last_sees_only_the_last_query_rows(tiny, last):
    """``Plan(observe_last=N)``: full maps and first-token mass over the last N queries equal eager's last N rows."""
    from attnlab.collect import forward_with_probes
    from attnlab.probes.attention import FirstTokenMass, FullMaps

    model, tok = tiny
    enc = tok(TEXTS[0], return_tensors="pt")
    maps, first = FullMaps(), FirstTokenMass()
    forward_with_probes(model, enc["input_ids"], enc["attention_mask"], [maps, first], observe_last=last)
    A = eager_maps(model, tok, TEXTS[0])                                                   # [L, H, n, n]
    assert maps.result()[:, 0].shape == A[:, :, -last:].shape
    assert (maps.result()[:, 0] - A[:, :, -last:]).abs().max() <= 1e-5
    assert (first.result()[:, 0] - A[:, :, -last:, 0].mean(-1)).abs().max() <= 1e-5
