"""`attnlab stream` and `attnlab generate --stream`: valid JSON / PNG, bounded caches, bad input in one line."""
import json
import math
import re

import pytest
import torch
from typer.testing import CliRunner

from attnlab.cli import app

runner = CliRunner()


def invoke(args):
    return runner.invoke(app, args, catch_exceptions=False)


def test_stream_writes_json_and_png_for_every_mode(tmp_path):
    out = tmp_path / "out"
    result = invoke(["stream", "tiny", "--tokens", "400", "--window", "60", "--recompute-every", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "stream.json").read_text())
    assert (out / "stream.png").read_bytes()[:4] == b"\x89PNG"
    assert list(report["modes"]) == ["dense", "window", "recompute", "sink"]
    assert report["tokens"] == 400 and report["cache_size"] == 64 and report["command"].startswith("attnlab stream")
    modes = report["modes"]
    assert modes["sink"]["cache_tokens_end"] == 64 and modes["window"]["cache_tokens_end"] == 64
    assert modes["dense"]["cache_tokens_end"] == 400                           # dense grows with the text
    assert modes["dense"]["cache_bytes_end"] > 5 * modes["sink"]["cache_bytes_end"]
    assert modes["recompute"]["evaluated"] == 10
    for mode, entry in modes.items():
        assert math.isfinite(entry["ppl"]) and entry["tokens_per_s"] > 0, mode
        curve = report["curves"][mode]
        assert curve["tokens"][-1] == entry["evaluated"] if mode != "recompute" else curve["tokens"][-1] == 361
        assert curve["ppl"][-1] == pytest.approx(entry["ppl"], rel=1e-6)
    assert len(report["segments"]["sink"]) == 10
    assert "sink_ppl / recompute_ppl (same positions)" in report["ratios"]
    assert "perplexity" in result.output and "window_ppl / sink_ppl" in result.output


def test_stream_policy_and_file(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("It was a bright cold day in April, and the clocks were striking thirteen. " * 5, encoding="utf-8")
    out = tmp_path / "o"
    result = invoke(["stream", "tiny", "--file", str(text), "--policy", "tova", "--modes", "window,policy", "--tokens", "150",
                     "--sinks", "2", "--window", "30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "stream.json").read_text())
    assert list(report["modes"]) == ["window", "tova"] and report["policy"] == "tova"
    assert report["modes"]["tova"]["cache_tokens_end"] == 32
    assert "book.txt" in report["file"] and "--policy tova" in report["command"]


def _one_error_line(result):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error")]) == 1


@pytest.mark.parametrize("args, message", [
    (["--window", "0"], "--window must be an integer > 0"),
    (["--sinks", "-1"], "--sinks must be an integer >= 0"),
    (["--window", "600"], "it has 512 positions"),
    (["--policy", "lru"], "unknown policy 'lru'"),
    (["--modes", "dense,fast"], "unknown mode 'fast'"),
    (["--tokens", "0"], "--tokens must be >= 1"),
    (["minilm"], "cannot re-assign positions for model type 'bert'"),
    (["--dtype", "float8"], "unknown dtype 'float8'"),
    (["--device", "gpu0"], "unknown device 'gpu0'"),
])
def test_stream_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    model, args = (args[0], args[1:]) if not args[0].startswith("--") else ("tiny", args)
    result = invoke(["stream", model, "--tokens", "50", "--out", str(out)] + args)
    _one_error_line(result)
    assert message in result.output
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_asked_of_a_cpu_torch_is_one_line(tmp_path):
    for command in (["stream", "--out", str(tmp_path / "never")], ["generate", "--prompt", "The sea"]):
        result = invoke(command + ["--device", "cuda"])
        _one_error_line(result)
        assert "sees no CUDA GPU" in result.output and "--device cpu" in result.output
    assert not (tmp_path / "never").exists()


def test_stream_in_bfloat16_scores_like_float32(tmp_path):
    """Half precision changes each NLL a little, not the perplexity: the sink cache re-rotates in float32."""
    reports = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        result = invoke(["stream", "tiny", "--tokens", "300", "--window", "60", "--modes", "window,sink", "--dtype", dtype,
                         "--out", str(out)])
        assert result.exit_code == 0, result.output
        reports[dtype] = json.loads((out / "stream.json").read_text())
    assert reports["bfloat16"]["dtype"] == "bfloat16" and "--dtype bfloat16" in reports["bfloat16"]["command"]
    assert reports["float32"]["dtype"] == "float32" and reports["float32"]["device"] == "cpu"
    for mode in ("window", "sink"):
        half, full = reports["bfloat16"]["modes"][mode]["ppl"], reports["float32"]["modes"][mode]["ppl"]
        assert half == pytest.approx(full, rel=0.05) and half != full, mode


def test_stream_bad_files_are_one_line_and_write_nothing(tmp_path):
    empty, binary = tmp_path / "empty.txt", tmp_path / "bin.txt"
    empty.write_text("  \n")
    binary.write_bytes(b"\xff\xfe\x00bad")
    for path, message in ((empty, "is empty"), (binary, "not UTF-8"), (tmp_path / "missing.txt", "is not a file")):
        out = tmp_path / f"out-{path.stem}"
        result = invoke(["stream", "tiny", "--file", str(path), "--tokens", "50", "--out", str(out)])
        _one_error_line(result)
        assert message in result.output
        assert not out.exists()


def test_stream_refuses_to_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stream.json").write_text("mine")
    result = invoke(["stream", "tiny", "--tokens", "50", "--out", str(out)])
    _one_error_line(result)
    assert "already exists" in result.output
    assert (out / "stream.json").read_text() == "mine" and not (out / "stream.png").exists()


def test_generate_stream_runs_past_the_window_with_a_bounded_cache():
    result = invoke(["generate", "tiny", "--prompt", "The old lighthouse keeper", "--stream", "--max-new-tokens", "60",
                     "--sinks", "4", "--window", "16", "--ignore-eos"])
    assert result.exit_code == 0, result.output
    assert "60 new tokens" in result.output
    assert "cache: 20 of 4+16 tokens per layer" in result.output
    assert int(re.search(r"(\d+)\s+evictions", result.output).group(1)) > 0


def test_generate_without_stream_stops_at_the_model_positions():
    result = invoke(["generate", "tiny", "--prompt", "The sea", "--max-new-tokens", "600"])
    _one_error_line(result)
    assert "use --stream" in result.output
    ok = invoke(["generate", "tiny", "--prompt", "The sea", "--max-new-tokens", "5"])
    assert ok.exit_code == 0 and "new tokens" in ok.output


@pytest.mark.parametrize("args, message", [
    (["--stream", "--window", "0"], "--window must be"), (["--stream", "--sinks", "-2"], "--sinks must be"),
    (["--stream", "--window", "700"], "512 positions"), (["--max-new-tokens", "0"], "--max-new-tokens must be"),
    (["--chat"], "has no chat template"),
])
def test_generate_bad_input(args, message):
    result = invoke(["generate", "tiny", "--prompt", "The sea"] + args)
    _one_error_line(result)
    assert message in result.output


def test_generate_default_model_answers_in_its_chat_template():
    """The default model (SmolLM2-Instruct) gets the prompt as a user turn, and answers it."""
    result = invoke(["generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output
