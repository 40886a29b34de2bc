"""Bad or unusual input to the Python API: one line of AttnlabError that says what to do, never a traceback,
never a silently wrong result, and nothing left attached to or hooked on the model."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

import attnlab
from attnlab.cache import SinkCache
from attnlab.collect import collect
from attnlab.errors import AttnlabError
from attnlab.models.loading import TINY_PATH
from attnlab.spans import Spans, strip_markers

PROMPT = "The capital of Zorland is Rome. Previously the capital of Zorland was Paris, but now it is Rome."
ROME = PROMPT.index("Rome")


def one_line(excinfo) -> str:
    """The error's message, checked to be one line."""
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    return message


def hooks_and_backends(model) -> tuple[int, set]:
    """Forward (pre-)hooks on every module, and the attention implementations of every config."""
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    return hooks, {m.config._attn_implementation for m in model.modules() if getattr(m, "config", None) is not None}


def resolved_tokens(tok, prompt, spec) -> list[str]:
    """The tokens a span given as ``spec`` selects in plain ``tok(prompt)`` inputs."""
    enc = tok(prompt, return_tensors="pt")
    mask = Spans.resolve(tok, enc["input_ids"], enc["attention_mask"].bool(), spec)
    return tok.convert_ids_to_tokens(enc["input_ids"][0][mask[0]].tolist())


# ---- character ranges index the user's text, with or without a BOS the tokenizer adds ---------------------------

@pytest.mark.parametrize("name, adds_bos", [("tiny", True), ("smollm2", False)])
def test_character_ranges_of_plain_inputs_index_the_prompt(request, name, adds_bos):
    model, tok = request.getfixturevalue(name)
    assert (tok(PROMPT)["input_ids"][0] == tok.bos_token_id) is adds_bos
    assert resolved_tokens(tok, PROMPT, (ROME, ROME + 4)) == ["ĠRome"]
    assert resolved_tokens(tok, PROMPT, (0, 3)) == ["The"]
    assert resolved_tokens(tok, PROMPT, (len(PROMPT) - 5, len(PROMPT))) == ["ĠRome", "."]
    with pytest.raises(AttnlabError) as excinfo:
        resolved_tokens(tok, PROMPT, (0, 500))
    assert f"(length {len(PROMPT)})" in one_line(excinfo)
    # the same mask as the one Spans.encode builds from the text itself, never decoded
    enc = tok(PROMPT, return_tensors="pt")
    from_ids = Spans.resolve(tok, enc["input_ids"], enc["attention_mask"].bool(), (ROME, ROME + 4))
    assert torch.equal(from_ids, Spans.encode(tok, [PROMPT], {"x": (ROME, ROME + 4)}).masks["x"])


def test_character_ranges_steer_the_tokens_they_name(tiny):
    model, tok = tiny
    enc = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        base = model(**enc).logits
        with attnlab.steer(model, attnlab.PASTA((ROME, ROME + 4), heads="L1", alpha=0.01), tokenizer=tok):
            by_range = model(**enc).logits
        with attnlab.steer(model, attnlab.PASTA("Rome", heads="L1", alpha=0.01), tokenizer=tok):
            by_text = model(**enc).logits
    assert (by_range - base).abs().max() > 1e-2
    assert torch.equal(by_range, by_text)


def test_padded_batch_ranges_index_each_prompt(tiny):
    model, tok = tiny
    prompts = [PROMPT, "Short: Rome."]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    mask = Spans.resolve(tok, enc["input_ids"], enc["attention_mask"].bool(), [[(ROME, ROME + 4)], [(7, 11)]])
    assert [tok.convert_ids_to_tokens(enc["input_ids"][b][mask[b]].tolist()) for b in range(2)] == \
        [["ĠRome"], ["ĠRome"]]


def test_a_tokenizer_that_changes_the_text_refuses_ranges(minilm):
    model, tok = minilm
    with pytest.raises(AttnlabError) as excinfo:
        resolved_tokens(tok, PROMPT, (ROME, ROME + 4))
    assert "Spans.encode" in one_line(excinfo)
    assert resolved_tokens(tok, PROMPT, "rome") == ["rome"]          # text found as the tokenizer reads it back


def test_a_range_outside_the_prompt_fails_inside_the_block_and_leaves_nothing(tiny):
    model, tok = tiny
    enc = tok(PROMPT, return_tensors="pt")
    before = hooks_and_backends(model)
    with pytest.raises(AttnlabError) as excinfo:
        with attnlab.steer(model, attnlab.PASTA((ROME, 500)), tokenizer=tok):
            model(**enc)
    assert f"outside prompt 1 (length {len(PROMPT)})" in one_line(excinfo)
    assert hooks_and_backends(model) == before


# ---- spans, markers and prompts --------------------------------------------------------------------------------

@pytest.mark.parametrize("prompts, match", [
    ([], "no prompt given"),
    ([5], "prompt 1 is a int, not text"),
    (["fine", None], "prompt 2 is a NoneType, not text"),
    (["  "], "prompt 1 is empty"),
    (["<<a<<b>>c>>"], "nested markers"),
    (["<<a>> then << b"], "unclosed marker"),
])
def test_spans_encode_refuses(tiny, prompts, match):
    with pytest.raises(AttnlabError, match=match) as excinfo:
        Spans.encode(tiny[1], prompts)
    one_line(excinfo)


def test_markers_that_do_not_nest_still_work():
    assert strip_markers("a <<b>> c <<d>>") == ("a b c d", [(2, 3), (6, 7)])
    assert strip_markers("x >> y") == ("x >> y", [])


@pytest.mark.parametrize("spec, match", [
    (5, "cannot read a span given as a int"),
    (("a", "b"), "give \\(start, end\\) as two whole numbers"),
    ((1, 2, 3), "give \\(start, end\\) as two whole numbers"),
    ([], "empty span list"),
])
def test_span_specs_that_cannot_be_read(tiny, spec, match):
    with pytest.raises(AttnlabError, match=match) as excinfo:
        resolved_tokens(tiny[1], PROMPT, spec)
    one_line(excinfo)


# ---- collect and profile -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda m, t: collect(m, t, ["a text"], batch_size=0), "batch_size must be a whole number >= 1, got 0"),
    (lambda m, t: collect(m, t, ["a text"], batch_size=1.5), "batch_size must be a whole number >= 1"),
    (lambda m, t: collect(m, t, ["a text", 7]), "text 2 is a int, not text"),
    (lambda m, t: attnlab.collect(m, t, 123), "cannot read texts given as a int"),
    (lambda m, t: attnlab.profile(m, 123, tokenizer=t), "cannot read texts given as a int"),
    (lambda m, t: attnlab.profile(m, [b"bytes"], tokenizer=t), "text 1 is a bytes, not text"),
])
def test_collect_and_profile_refuse(tiny, call, match):
    model, tok = tiny
    before = hooks_and_backends(model)
    with pytest.raises(AttnlabError, match=match) as excinfo:
        call(model, tok)
    one_line(excinfo)
    assert hooks_and_backends(model) == before


def test_a_span_missing_from_a_later_text_leaves_nothing(tiny):
    model, tok = tiny
    before = hooks_and_backends(model)
    with pytest.raises(AttnlabError, match="span 'Rome' is not in text 2") as excinfo:
        collect(model, tok, [PROMPT, "No city here."], spans={"city": "Rome"})
    one_line(excinfo)
    assert hooks_and_backends(model) == before


# ---- load ------------------------------------------------------------------------------------------------------

def tiny_copy(tmp_path, *, weights: bool = True, tokenizer: bool = True):
    """A copy of the bundled tiny model's folder, with or without its weights and tokenizer files."""
    folder = tmp_path / "model"
    folder.mkdir()
    for f in TINY_PATH.iterdir():
        if f.suffix == ".safetensors" and not weights or f.name.startswith(("tokenizer", "special")) and not tokenizer:
            continue
        if f.is_file():
            shutil.copy(f, folder / f.name)
    return folder


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, 3, "int8"])
def test_load_refuses_a_dtype_that_cannot_hold_weights(dtype):
    with pytest.raises(AttnlabError, match="float32, fp32, float16") as excinfo:
        attnlab.load("tiny", dtype=dtype)
    one_line(excinfo)


def test_load_refuses_gemma2_before_reading_weights(tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    folder = tiny_copy(tmp_path, weights=False)
    config = Gemma2Config(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, attn_logit_softcapping=50.0)
    Gemma2ForCausalLM(config).save_pretrained(folder)
    with pytest.raises(AttnlabError, match="Gemma2ForCausalLM cannot run its attention on SDPA") as excinfo:
        attnlab.load(str(folder))
    one_line(excinfo)


def test_load_refuses_junk_weights(tmp_path):
    folder = tiny_copy(tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file" * 4)
    with pytest.raises(AttnlabError, match="weights of .* cannot be read") as excinfo:
        attnlab.load(str(folder))
    one_line(excinfo)


def test_load_refuses_a_folder_without_tokenizer(tmp_path):
    folder = tiny_copy(tmp_path, tokenizer=False)
    with pytest.raises(AttnlabError, match="no tokenizer could be loaded.*tokenizer.json") as excinfo:
        attnlab.load(str(folder))
    one_line(excinfo)
    model, tok = attnlab.load(str(folder), attnlab.load("tiny")[1])     # with a tokenizer given, it loads
    assert model.config.num_hidden_layers == 4 and tok.bos_token == "<|bos|>"


@pytest.mark.parametrize("text", ["{not json", ""])
def test_load_says_an_invalid_config_is_invalid(tmp_path, text):
    folder = tiny_copy(tmp_path)
    (folder / "config.json").write_text(text)
    with pytest.raises(AttnlabError, match="config.json cannot be read") as excinfo:
        attnlab.load(str(folder))
    assert "hub" not in one_line(excinfo)


def test_load_names_a_config_without_model_type(tmp_path):
    folder = tiny_copy(tmp_path)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 128}))
    with pytest.raises(AttnlabError, match="model_type") as excinfo:
        attnlab.load(str(folder))
    assert "hub" not in one_line(excinfo)


# ---- the sink cache ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [None, "tiny", 3])
def test_sink_cache_needs_a_model(model):
    with pytest.raises(AttnlabError, match="SinkCache needs the loaded model") as excinfo:
        SinkCache(model, num_sink=4, window=16)
    one_line(excinfo)


def test_sink_cache_policy_is_spelt_one_way(tiny):
    from attnlab.cache.evaluate import BOUNDED
    from attnlab.cache.policies import POLICIES

    assert SinkCache(tiny[0], num_sink=4, window=16, policy="sink").policy.name == "sink"
    assert set(POLICIES) | {"window"} == set(BOUNDED)
    with pytest.raises(AttnlabError, match="use one of sink, h2o, tova, snapkv") as excinfo:
        SinkCache(tiny[0], num_sink=4, window=16, policy="streamingllm")
    one_line(excinfo)


# ---- names that do not hide modules ----------------------------------------------------------------------------

def test_modules_stay_reachable_and_callable(tiny):
    code = ("import types, attnlab; print(attnlab.steer.selection.__name__, all(isinstance(m, types.ModuleType) and "
            "callable(m) for m in (attnlab.steer, attnlab.profile, attnlab.collect)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["attnlab.steer.selection", "True"]
    model, tok = tiny
    got = attnlab.collect(model, tok, ["The cat sat."], probes=("first_token_mass",))
    again = attnlab.collect.collect(model, tok, ["The cat sat."], probes=("first_token_mass",))
    assert torch.equal(got.stats["first_token_mass"][0], again.stats["first_token_mass"][0])
