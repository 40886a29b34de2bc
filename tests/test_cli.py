"""The command line: `attnlab profile` writes a valid report and pictures; bad input is one line, exit 2."""
import json

from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.report.schema import Report

runner = CliRunner()


def test_profile_defaults_write_report_and_heatmap(tmp_path):
    """The quick start: the default model is SmolLM2-135M-Instruct, whose heads mostly sink on the first token."""
    result = runner.invoke(app, ["profile", "--out", str(tmp_path), "--span", "lighthouse", "--maps", "L1H0-3"])
    assert result.exit_code == 0, result.output
    report = Report.model_validate(json.loads((tmp_path / "profile.json").read_text()))
    assert report.model.name == "smollm2" and report.model.architecture == "LlamaForCausalLM"
    assert report.model.revision.startswith("gguf-sha256:")
    assert report.summary.heads_with_sink_beyond_layer0 > 29 * 9 / 2
    assert "lighthouse" in report.summary.span_mass
    for name in ("profile_heatmap.png", "attention_maps.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "Sink ratio" in result.output


def test_profile_file_input_and_refusal_to_overwrite(tmp_path):
    text_file = tmp_path / "in.txt"
    text_file.write_text("One two three. Four five six.")
    out = tmp_path / "out"
    assert runner.invoke(app, ["profile", "tiny", "--file", str(text_file), "--out", str(out)]).exit_code == 0
    before = (out / "profile.json").read_text()
    again = runner.invoke(app, ["profile", "tiny", "--file", str(text_file), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert (out / "profile.json").read_text() == before


def test_bad_inputs_give_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    cases = [(["profile", "nope-model"], "unknown model"), (["profile", "--file", str(bad)], "not UTF-8"),
             (["profile", "--text", ""], "empty"), (["profile", "--maps", "L40"], "does not exist"),
             (["profile", "--text", "abc", "--span", "xyz"], "not in text 1")]
    for args, message in cases:
        result = runner.invoke(app, args + ["--out", str(tmp_path / "o")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output
        assert len([l for l in result.output.splitlines() if l.startswith("error")]) == 1


def test_steer_side_by_side_json():
    prompt = "Previously the capital was Paris, <<but now the capital is Rome.>> The capital is"
    result = runner.invoke(app, ["steer", "tiny", "--method", "pasta", "--prompt", prompt, "--max-new-tokens", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["prompt"] == prompt.replace("<<", "").replace(">>", "")
    assert data["watched"] == "span" and len(data["attention_by_layer"]) == 4
    assert all(r["steered"] > r["unsteered"] for r in data["attention_by_layer"])


def test_steer_tables_and_bad_method():
    ok = runner.invoke(app, ["steer", "tiny", "-m", "zerotuning", "--prompt", "The sea was calm.", "--max-new-tokens", "2"])
    assert ok.exit_code == 0 and "first token" in ok.output
    bad = runner.invoke(app, ["steer", "tiny", "-m", "telepathy", "--prompt", "x"])
    assert bad.exit_code == 2 and "unknown method 'telepathy'" in bad.output
    bad = runner.invoke(app, ["steer", "tiny", "-m", "pasta", "--prompt", "The sea.", "-e", "sea", "--alpha", "2"])
    assert bad.exit_code == 2 and "alpha must be in (0, 1)" in bad.output
