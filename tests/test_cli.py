"""The command line: `attnlab profile` writes a valid report and pictures; bad input is one line, exit 2."""
import json

from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.report.schema import Report

runner = CliRunner()


def test_profile_defaults_write_report_and_heatmap(tmp_path):
    result = runner.invoke(app, ["profile", "--out", str(tmp_path), "--span", "lighthouse", "--maps", "L1H0-3"])
    assert result.exit_code == 0, result.output
    report = Report.model_validate(json.loads((tmp_path / "profile.json").read_text()))
    assert report.model.name == "tiny" and report.texts[0].bos_used
    assert report.model.revision.startswith("sha256:")
    assert "lighthouse" in report.summary.span_mass
    for name in ("profile_heatmap.png", "attention_maps.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "Sink ratio" in result.output


def test_profile_file_input_and_refusal_to_overwrite(tmp_path):
    text_file = tmp_path / "in.txt"
    text_file.write_text("One two three. Four five six.")
    out = tmp_path / "out"
    assert runner.invoke(app, ["profile", "--file", str(text_file), "--out", str(out)]).exit_code == 0
    before = (out / "profile.json").read_text()
    again = runner.invoke(app, ["profile", "--file", str(text_file), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert (out / "profile.json").read_text() == before


def test_bad_inputs_give_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    cases = [(["profile", "nope-model"], "unknown model"), (["profile", "--file", str(bad)], "not UTF-8"),
             (["profile", "--text", ""], "empty"), (["profile", "--maps", "L7"], "does not exist"),
             (["profile", "--text", "abc", "--span", "xyz"], "not in text 1")]
    for args, message in cases:
        result = runner.invoke(app, args + ["--out", str(tmp_path / "o")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output
        assert len([l for l in result.output.splitlines() if l.startswith("error")]) == 1
