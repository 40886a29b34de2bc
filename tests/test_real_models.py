"""The two real pretrained LMs that install from PyPI (SmolLM2-135M-Instruct, Gemma 3 270M): the seam leaves them
exact, their heads sink as the papers describe (checked against eager maps computed here), chat templating keeps
spans on the right tokens, and the sink cache's keys equal a fresh forward's."""
import pytest
import torch
from transformers import DynamicCache

import attnlab
from attnlab import seam
from attnlab.cache import SinkCache
from attnlab.plan import Plan

# Held-out prose: written for this test, in no bundled file and no prompt of attnlab's.
HELD_OUT = ("The ferry left the harbour an hour late because a storm had torn the canvas from the market stalls. "
            "On the upper deck an old fisherman explained to two children why the gulls always followed the boat, "
            "while their mother counted the coins she would need for bread on the far side of the bay.")
BATCH = ["A short question: where do herons sleep at night?",
         "The library closed early on Sunday, so the students moved their notes to the café across the square."]


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real(request):
    return request.getfixturevalue(request.param)


def left_padded(tok, texts):
    tok.padding_side = "left"
    return tok(texts, return_tensors="pt", padding=True)


def test_identity_plan_equals_plain_sdpa(real):
    model, tok = real
    enc = left_padded(tok, BATCH)
    pos = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = model(**enc, position_ids=pos).logits
        with seam.attached(model, Plan()) as att:
            attached = model(**enc, position_ids=pos).logits
    assert att.calls == model.config.num_hidden_layers
    valid = enc.attention_mask.bool()
    assert (attached - plain)[valid].abs().max() <= 1e-4
    assert model.config._attn_implementation == "sdpa"


def eager_first_token_mass(model, tok, text):
    """Per layer and head, the mean attention on the first token over the queries after it, from eager maps."""
    ids = tok(text, return_tensors="pt").input_ids
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            maps = model(ids, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    return torch.stack([a[0, :, 1:, 0].mean(-1) for a in maps])            # [layers, heads]


def test_most_heads_beyond_layer0_sink_on_held_out_prose(real):
    model, tok = real
    report = attnlab.profile(model, [HELD_OUT], tokenizer=tok)
    mass = torch.tensor(report.summary.first_token_mass)
    eager = eager_first_token_mass(model, tok, HELD_OUT)
    assert (mass - eager).abs().max() <= 1e-4
    beyond = eager[1:]
    assert (beyond >= 0.3).sum() == report.summary.heads_with_sink_beyond_layer0
    assert (beyond >= 0.3).float().mean() > 0.5           # most heads: a real first-token sink
    assert eager[0].mean() < beyond.mean()


def test_chat_template_keeps_spans_on_their_text(smollm2):
    model, tok = smollm2
    inputs = attnlab.Spans.encode(tok, ["Records: a=1. <<river=17.>> Which value has river?"],
                                  {"query": "Which value has river?"}, chat=True)
    ids = inputs["input_ids"][0]
    assert tok.decode(ids).startswith("<|im_start|>system")
    assert inputs.texts[0].endswith("<|im_start|>assistant\n")
    assert tok.decode(ids[inputs.masks["marked"][0]]).strip() == "river=17."
    assert tok.decode(ids[inputs.masks["query"][0]]).strip() == "Which value has river?"


def test_chat_refused_without_a_template(tiny):
    with pytest.raises(attnlab.AttnlabError, match="no chat template"):
        attnlab.Spans.encode(tiny[1], ["hello"], chat=True)


def test_chat_prompt_gets_an_answer_where_a_bare_one_ends_the_turn(smollm2):
    """SmolLM2-Instruct prompted without its template ends its turn at once; in it, it answers."""
    from attnlab.steer.selection import generate_texts

    model, tok = smollm2
    prompt = "The code for indigo is 188. The code for amber is 42. What is the code for indigo?"
    bare, chat = (generate_texts(model, tok, [prompt], None, 12, chat=c)[0] for c in (False, True))
    assert bare.strip() == ""
    assert "188" in chat


def test_sink_cache_keys_equal_fresh_forward(real):
    model, tok = real
    num_sink, window = 4, 60
    ids = tok(HELD_OUT * 2, return_tensors="pt").input_ids[:, :150]
    cache = SinkCache(model, num_sink=num_sink, window=window)
    with torch.no_grad():
        for t in range(0, ids.shape[1], 10):
            model(ids[:, t:t + 10], past_key_values=cache, use_cache=True)
    stored = cache.layers[0].stored
    assert cache.layers[0].evictions > 0
    kept = torch.cat([ids[:, :num_sink], ids[:, ids.shape[1] - (stored - num_sink):]], dim=1)
    fresh = DynamicCache()                 # full layers: a config's sliding layers would keep only their window
    with torch.no_grad():
        model(kept, past_key_values=fresh, use_cache=True)
    # Layer 0's keys depend only on the token and its position; deeper layers also on the evicted history.
    got, want = cache.layers[0], fresh.layers[0]
    assert (got.current_keys() - want.keys).abs().max() <= 1e-4
    assert (got.values - want.values).abs().max() <= 1e-5
