"""Property tests of steering (hypothesis) and its bad-input handling."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attnlab
from attnlab.collect import forward_with_probes, encode, ModelShape
from attnlab.errors import AttnlabError
from attnlab.probes.attention import SpanMass

PROMPT = "Previously the capital of Zorland was Paris, but now the capital of Zorland is Rome. The capital is"
SPAN = "but now the capital of Zorland is Rome."
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def logits(model, enc):
    with torch.no_grad():
        return model(**enc).logits


def hook_count(model) -> int:
    """Forward hooks and pre-hooks on the model and every submodule."""
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def implementations(model) -> set:
    return {m.config._attn_implementation for m in model.modules() if getattr(m, "config", None) is not None}


def assert_unsteered(model, enc, base, hooks_before):
    """Leaving the block left nothing behind: logits exactly as before, no hook, every config's implementation
    back to SDPA."""
    assert hook_count(model) == hooks_before
    assert implementations(model) == {"sdpa"}
    assert torch.equal(logits(model, enc), base)


@given(heads=st.sampled_from(["all", "L0", "L1H0-3", "L3H7"]),
       keys=st.sampled_from(["prompt", "first", "span:emphasis", "~span:emphasis", "generated"]),
       queries=st.sampled_from(["all", "prompt", "generated", "span:emphasis"]),
       kind=st.sampled_from(["bias", "temperature", "output_scale"]))
@SETTINGS
def test_identity_edit_changes_nothing(tiny, heads, keys, queries, kind):
    model, tok = tiny
    enc = tok(PROMPT, return_tensors="pt")
    base = logits(model, enc)
    value = {"bias": 0.0, "temperature": 1.0, "output_scale": 1.0}[kind]
    edit = attnlab.Edit(heads=heads, keys=keys, queries=queries, **{kind: value})
    with attnlab.steer(model, edit, attnlab.PASTA(SPAN, heads="L0H0", alpha=0.999999), tokenizer=tok):
        steered = logits(model, enc)
    assert (steered - base).abs().max() <= 1e-4


@given(alpha=st.floats(0.001, 0.9), fail=st.booleans())
@SETTINGS
def test_leaving_the_block_restores_exact_logits(tiny, alpha, fail):
    model, tok = tiny
    enc = tok(PROMPT, return_tensors="pt")
    base, hooks = logits(model, enc), hook_count(model)
    try:
        with attnlab.steer(model, attnlab.PASTA(SPAN, alpha=alpha), attnlab.ACT(), tokenizer=tok):
            logits(model, enc)
            if fail:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert_unsteered(model, enc, base, hooks)


@given(alpha=st.floats(0.001, 0.9), heads=st.sampled_from(["all", "L1", "L0H2,L2H5-7", "L3H0"]))
@SETTINGS
def test_pasta_raises_the_span_share_of_every_steered_head(tiny, alpha, heads):
    model, tok = tiny
    shape = ModelShape.of(model)
    enc = encode(tok, [PROMPT], shape)
    start = PROMPT.index(SPAN)
    offsets = enc.offsets[0]
    span_mask = torch.tensor([[e > s and s < start + len(SPAN) and e > start for s, e in offsets]])
    before = SpanMass("e", span_mask)
    forward_with_probes(model, enc.input_ids, enc.attention_mask, [before])
    after = SpanMass("e", span_mask)
    with attnlab.steer(model, attnlab.PASTA(SPAN, heads=heads, alpha=alpha), tokenizer=tok, probes=[after]):
        with torch.no_grad():
            model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
    steered = attnlab.HeadSet.parse(heads, shape.n_layers, shape.n_heads)
    b, a = before.result()[:, 0], after.result()[:, 0]                 # [L, H]
    for layer, head in steered:
        assert a[layer, head] > b[layer, head]


@pytest.mark.parametrize("make, match", [
    (lambda: attnlab.PASTA("not in the prompt at all"), "span 'not in the prompt at all' is not in prompt 1"),
    (lambda: attnlab.PASTA(""), "PASTA needs spans"),
    (lambda: attnlab.PASTA([]), "PASTA needs spans"),
    (lambda: attnlab.PASTA(SPAN, alpha=0), r"alpha must be in \(0, 1\)"),
    (lambda: attnlab.PASTA(SPAN, alpha=1.5), r"alpha must be in \(0, 1\)"),
    (lambda: attnlab.PASTA(SPAN, mode="sideways"), "unknown mode"),
    (lambda: attnlab.PASTA(SPAN, heads="L9"), "layer 9 .* does not exist"),
    (lambda: attnlab.PASTA(SPAN, heads="L1H8"), "head 8 .* does not exist"),
    (lambda: attnlab.ACT(beta=1.0), "beta must be in"),
    (lambda: attnlab.SpotLight(SPAN, psi=0), "psi must be in"),
    (lambda: attnlab.ZeroTuning(gamma=-1), "gamma must be a positive"),
    (lambda: "pasta", "unknown steering method"),
])
def test_bad_input_is_one_line_and_model_unsteered(tiny, make, match):
    model, tok = tiny
    enc = tok(PROMPT, return_tensors="pt")
    base = logits(model, enc)
    hooks = hook_count(model)
    with pytest.raises(AttnlabError, match=match):
        with attnlab.steer(model, make(), tokenizer=tok):
            logits(model, enc)
    assert_unsteered(model, enc, base, hooks)


# --- failures *inside* the block, once the model is attached ----------------------------------------------------

TWO = [PROMPT, "Records: apple=482. river=17. Query: river? Answer:"]


def two_prompts(tok):
    return tok(TWO, return_tensors="pt", padding=True, padding_side="left")


def steered_logits(model, tok, enc, *methods):
    with attnlab.steer(model, *methods, tokenizer=tok):
        return logits(model, enc)


def test_user_error_inside_the_block_after_a_steered_forward(tiny):
    model, tok = tiny
    enc = two_prompts(tok)
    base, hooks = logits(model, enc), hook_count(model)
    method = attnlab.PASTA([[SPAN], ["river=17."]], alpha=0.01)
    before = steered_logits(model, tok, enc, method)
    assert (before - base).abs().max() > 1e-2
    with pytest.raises(ValueError, match="user code"):
        with attnlab.steer(model, method, tokenizer=tok):
            steered = logits(model, enc)
            assert hook_count(model) > hooks and implementations(model) == {"attnlab"}
            raise ValueError("user code")
    assert torch.equal(steered, before)
    assert_unsteered(model, enc, base, hooks)
    assert torch.equal(steered_logits(model, tok, enc, method), before)      # and steering again works as before


def test_span_missing_from_one_prompt_of_the_batch_fails_in_the_forward(tiny):
    model, tok = tiny
    enc = two_prompts(tok)
    base, hooks = logits(model, enc), hook_count(model)
    method = attnlab.PASTA([[SPAN], ["not in the second prompt"]])
    with pytest.raises(AttnlabError, match="span 'not in the second prompt' is not in prompt 2"):
        with attnlab.steer(model, method, tokenizer=tok):
            assert implementations(model) == {"attnlab"}                       # attached: the error comes later
            logits(model, enc)
    assert_unsteered(model, enc, base, hooks)


def test_key_index_past_the_prompt_fails_in_the_attention_function(tiny):
    model, tok = tiny
    enc = two_prompts(tok)
    base, hooks = logits(model, enc), hook_count(model)
    n_short = int(enc["attention_mask"].sum(1).min())
    with pytest.raises(AttnlabError, match=f"key index {n_short} is past the end of a prompt of {n_short} tokens"):
        with attnlab.steer(model, attnlab.Edit(heads="L1", keys=(0, n_short), bias=1.0), tokenizer=tok):
            logits(model, enc)
    assert_unsteered(model, enc, base, hooks)


def test_user_error_in_the_middle_of_generate(tiny):
    """A logits processor (user code) raising at the second decode step: the prompt and one cached step ran
    steered, and leaving the block still restores everything."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class Boom(LogitsProcessor):
        calls = 0

        def __call__(self, input_ids, scores):
            Boom.calls += 1
            if Boom.calls == 3:
                raise RuntimeError("boom at step 3")
            return scores

    def plain_generation():
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id,
                                 output_logits=True, return_dict_in_generate=True)
        return torch.stack(out.logits, 1)

    model, tok = tiny
    enc = two_prompts(tok)
    base, hooks = logits(model, enc), hook_count(model)
    unsteered = plain_generation()
    spans = [[SPAN], ["river=17."]]
    with pytest.raises(RuntimeError, match="boom at step 3"):
        with attnlab.steer(model, attnlab.PASTA(spans), attnlab.SpotLight(spans), tokenizer=tok):
            model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id,
                           logits_processor=LogitsProcessorList([Boom()]))
    assert Boom.calls == 3
    assert_unsteered(model, enc, base, hooks)
    assert torch.equal(plain_generation(), unsteered)                          # generation is unsteered too


def test_dynamic_method_refused_past_a_sliding_window_mid_generation(tiny):
    """ACT at a decode step past Mistral's window (8) is refused from inside the attention function."""
    from archs import build

    model = build("mistral", len(tiny[1]))
    tok = tiny[1]
    enc = two_prompts(tok)
    base, hooks = logits(model, enc), hook_count(model)
    with pytest.raises(AttnlabError, match="cannot follow layer .* sliding window"):
        with attnlab.steer(model, attnlab.ACT(), tokenizer=tok):
            model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert_unsteered(model, enc, base, hooks)


def test_steering_entered_mid_generation_is_refused_and_detached(tiny):
    from transformers import DynamicCache

    model, tok = tiny
    enc = two_prompts(tok)
    base, hooks = logits(model, enc), hook_count(model)
    with torch.no_grad():
        first = model(**enc, past_key_values=DynamicCache(), use_cache=True)
    step = {"input_ids": first.logits[:, -1].argmax(-1, keepdim=True),
            "attention_mask": torch.cat([enc["attention_mask"], torch.ones(2, 1, dtype=torch.long)], 1)}
    with pytest.raises(AttnlabError, match="in the middle of a generation"):
        with attnlab.steer(model, attnlab.ZeroTuning(2.0), tokenizer=tok):
            with torch.no_grad():
                model(**step, past_key_values=first.past_key_values, use_cache=True)
    assert_unsteered(model, enc, base, hooks)


def test_text_spans_need_a_tokenizer(tiny):
    from archs import build

    model = build("llama", len(tiny[1]))
    with pytest.raises(AttnlabError, match="need the tokenizer"):
        with attnlab.steer(model, attnlab.PASTA(SPAN)):
            model(**tiny[1](PROMPT, return_tensors="pt"))


def test_markers_with_spans_encode(tiny):
    model, tok = tiny
    inputs = attnlab.Spans.encode(tok, ["Previously X was Paris, <<but now X is Rome.>> X is", "Short <<one>>."])
    assert inputs.texts[1] == "Short one."
    with attnlab.steer(model, attnlab.PASTA(inputs)) as s:
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)
        marked = s.context.spans["emphasis"]
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    decoded = tok.decode(inputs["input_ids"][0][marked[0]])
    assert decoded.strip() == "but now X is Rome."
    with pytest.raises(AttnlabError, match="other inputs"):
        with attnlab.steer(model, attnlab.PASTA(inputs)):
            model(**tok("something else", return_tensors="pt"))


def test_softcapping_models_are_refused_not_silently_wrong():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, attn_logit_softcapping=50.0)
    model = Gemma2ForCausalLM(cfg).eval()
    with pytest.raises(AttnlabError, match="soft-capping"):
        with attnlab.steer(model, attnlab.ACT()):
            model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    assert model.config._attn_implementation != "attnlab"
