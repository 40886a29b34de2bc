"""Bad input on every command: exit code 2, one red line, no traceback, and no output folder left behind."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import transformers  # noqa: F401  (its log handler is made now, on the real stderr, not on a CliRunner's)

from attnlab.cli import app, method_specs
from attnlab.errors import AttnlabError

runner = CliRunner()
LONG = "word " * 3204


def refused(args, message):
    """Run ``attnlab ARGS`` and check it is refused in one line that contains ``message``."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and message in errors[0], (args, result.output)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh current folder, so that a default ``attnlab-out/`` left behind would show."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    yield tmp_path
    inputs = ["a-file", "latin1.txt"] + [p.name for p in tmp_path.glob("*.jsonl")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(inputs)


@pytest.mark.parametrize("args, message", [
    (["./does-not-exist"], "unknown model './does-not-exist'"),
    (["tiny", "--maps", ""], "--maps is empty"),
    (["tiny", "--maps", "L99"], "layer 99"),
    (["tiny", "--out", ""], "--out is empty"),
    (["tiny", "--out", "a-file"], "--out a-file is a file"),
    (["tiny", "--file", "latin1.txt"], "not UTF-8"),
    (["tiny", "--text", "   "], "text 1 is empty"),
    (["tiny", "--text", LONG], "at most 512"),
    (["tiny", "--text", "abc", "--span", "xyz"], "not in text 1"),
])
def test_profile(workdir, args, message):
    refused(["profile"] + args, message)


def test_profile_refuses_maps_that_do_not_fit_before_profiling(workdir):
    """SmolLM2's full maps of ~2,000 tokens need over 2 GiB: refused before the profile runs and writes."""
    refused(["profile", "smollm2", "--maps", "all", "--text", "word " * 2000], "GiB")


@pytest.mark.parametrize("args, message", [
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "   "], "the prompt is empty"),
    (["-m", "zerotuning", "--prompt", ""], "the prompt is empty"),
    (["-m", "zerotuning", "--prompt", LONG], "exceed the model's 512 positions"),
    (["-m", "zerotuning", "--prompt", "The sea", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["-m", "spotlight", "--heads", "L99H99", "--prompt", "The <<sea>>"], "spotlight has no setting 'heads'"),
    (["-m", "pasta", "--heads", "L99H99", "--prompt", "The <<sea>>"], "layer 99"),
    (["-m", "pasta", "--alpha", "abc", "--prompt", "The <<sea>>"], "alpha must be a number in (0, 1)"),
    (["-m", "pasta", "--gamma", "3", "--prompt", "The <<sea>>"], "pasta has no setting 'gamma'"),
    (["-m", "pasta", "--prompt", "The sea"], "PASTA needs spans to emphasise"),
    (["-m", "head-scale", "--prompt", "The sea"], "head-scale needs heads"),
    (["-m", "temperature", "--heads", "L1", "--temperature", "0", "--prompt", "The sea"], "temperature must be a "
                                                                                          "positive number"),
    (["-m", "telepathy", "--prompt", "x"], "unknown method 'telepathy'"),
])
def test_steer(workdir, args, message):
    refused(["steer", "tiny"] + args, message)


def test_steer_and_generate_refuse_an_encoder(workdir):
    refused(["steer", "minilm", "-m", "zerotuning", "--prompt", "The sea"], "is an encoder")
    refused(["generate", "minilm", "--prompt", "The sea"], "is an encoder")


def _jsonl(folder, name, records):
    path = folder / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records), encoding="utf-8")
    return str(path)


def test_eval(workdir):
    good = {"prompt": "The sea is <<calm>>. The sea is", "answer": " calm"}
    bad_answers = _jsonl(workdir, "answers.jsonl", [good, {"prompt": "x", "answers": []}])
    bad_prompt = _jsonl(workdir, "prompt.jsonl", [good, good, {"prompt": 3, "answer": "x"}])
    not_json = _jsonl(workdir, "broken.jsonl", [good, "{prompt"])
    one = _jsonl(workdir, "one.jsonl", [good])
    latin = str(workdir / "latin1.txt")
    for args, message in [
        (["--set", "alpha=abc"], "pasta: alpha must be a number in (0, 1), got 'abc'"),
        (["--set", "foo=1"], "pasta has no setting 'foo': its settings are heads, alpha, mode"),
        (["--set", "alpha"], "cannot read --set 'alpha'"),
        (["--set", "alpha=2"], "alpha must be in (0, 1), got 2.0"),
        (["--set", "top_k=4"], "pasta has no setting 'top_k'"),
        (["--sweep", "bogus=1,2"], "pasta has no setting 'bogus'"),
        (["--sweep", "alpha="], "--sweep needs at least one value"),
        (["--sweep", "alpha=0.1,7"], "alpha must be in (0, 1), got 7.0"),
        (["--select", "gamma"], "pasta has no setting 'gamma' to choose from data: it can choose heads"),
        (["--select", "heads", "--set", "heads=L1"], "heads is chosen from data"),
        (["-m", "zerotuning", "--span", "emphasis"], "zerotuning acts on no span"),
        (["-m", "none", "--set", "alpha=0.1"], "--set needs a method"),
        (["-m", "wizardry"], "unknown method 'wizardry'"),
        (["--task", "riddles"], "unknown task 'riddles'"),
        (["--task", "needle", "--pairs", "4"], "--pairs is for --task kv and kv-masked"),
        (["--n", "0"], "--n must be >= 1"),
        (["--train-n", "0"], "--train-n must be >= 1"),
        (["--file", one], "--file goes with --task jsonl"),
        (["--task", "jsonl"], "--task jsonl needs --file"),
        (["--task", "jsonl", "--file", bad_answers], "answers.jsonl line 2: 'answers' must be a non-empty"),
        (["--task", "jsonl", "--file", bad_prompt], "prompt.jsonl line 3: 'prompt' must be a non-empty string"),
        (["--task", "jsonl", "--file", not_json], "broken.jsonl line 2 is not JSON"),
        (["--task", "jsonl", "--file", latin], "not UTF-8"),
        (["--task", "jsonl", "--file", one, "--scorer", "soundex"], "unknown scorer 'soundex'"),
        (["--task", "jsonl", "--file", one, "--select", "heads"], "choosing settings needs at least two"),
        (["--task", "override", "-m", "instaboost"], "needs the span 'instruction'"),
        (["--out", "a-file"], "--out a-file is a file"),
    ]:
        refused(["eval", "tiny", "--task", "kv", "--n", "2"] + args, message)


@pytest.mark.parametrize("args, message", [
    (["--dense-tokens", "-1"], "--dense-tokens must be >= 1"),
    (["--out", "a-file"], "--out a-file is a file"),
    (["--out", ""], "--out is empty"),
    (["--file", "latin1.txt"], "not UTF-8"),
])
def test_stream(workdir, args, message):
    refused(["stream", "tiny", "--tokens", "50"] + args, message)


@pytest.mark.parametrize("args, message", [
    (["--prompt", "   "], "the prompt is empty"),
    (["--prompt", "The sea", "--threads", "0"], "--threads must be >= 1"),
    (["--prompt", "The sea", "--sample", "--temperature", "0"], "--temperature must be > 0"),
])
def test_generate(workdir, args, message):
    refused(["generate", "tiny"] + args, message)


def test_prepare(workdir):
    refused(["prepare", "tiny"], "'tiny' is not a GGUF model")


KEYS = st.one_of(st.sampled_from(["alpha", "heads", "mode", "beta", "threshold", "gamma", "m", "psi", "scale",
                                   "temperature", "queries", "top_k", "grid", " alpha"]), st.text(max_size=6))
VALUES = st.one_of(st.sampled_from(["0.5", "2", "-1", "0", "1e-3", "abc", "L1", "all", "0.5,2", "exclude", "nan",
                                    "inf", "", " 0.2 ", "3.0"]), st.text(max_size=8), st.floats().map(str))
ITEMS = st.one_of(st.builds("{}={}".format, KEYS, VALUES), st.text(max_size=10))


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["pasta", "act", "zerotuning", "instaboost", "spotlight", "head-scale", "temperature"]),
       items=st.lists(ITEMS, max_size=3), select=st.sampled_from([None, "heads", "gamma", "m"]))
def test_any_set_string_is_recorded_as_given_or_refused_in_one_line(method, items, select):
    """``eval --set`` strings: either every setting lands in the spec as parsed, or one line says why not."""
    try:
        [(_, spec)] = method_specs(method, items, select, None, None)
    except AttnlabError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    written = {}
    for item in items:
        key, _, text = item.partition("=")
        written[key.strip()] = text
    assert set(written) == set(spec.params)
    for key, text in written.items():
        value = spec.params[key]
        if isinstance(value, list):
            assert value == [float(v) for v in text.split(",")]
        elif isinstance(value, (int, float)):
            assert value == type(value)(text) and value == value
        else:
            assert value == text.strip() != ""
