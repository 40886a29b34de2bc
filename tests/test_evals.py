"""Evaluation tasks, statistics and the harness."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.errors import AttnlabError
from attnlab.evals.harness import MethodSpec, run, wilson
from attnlab.evals.stats import mcnemar_exact, paired_bootstrap
from attnlab.evals.tasks import make_task


def test_mcnemar_exact_matches_the_binomial_by_hand():
    u = [1] * 10 + [0] * 6 + [1] * 2 + [0] * 2    # lost 2 (u=1, s=0), gained 6 (u=0, s=1)
    s = [1] * 10 + [1] * 6 + [0] * 2 + [0] * 2
    r = mcnemar_exact(u, s)
    assert (r["lost"], r["gained"]) == (2, 6)
    assert r["p_value"] == pytest.approx(2 * sum(math.comb(8, i) for i in range(3)) / 2 ** 8)


def test_paired_bootstrap_brackets_the_difference_and_is_seeded():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 2, 200)
    s = np.where(rng.random(200) < 0.3, 1, u)
    a = paired_bootstrap(u, s, seed=3)
    assert a == paired_bootstrap(u, s, seed=3)
    assert a["ci_low"] <= a["difference"] <= a["ci_high"]
    assert a["difference"] == pytest.approx(s.mean() - u.mean())
    same = paired_bootstrap(u, u)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.404, abs=1e-3) and hi == pytest.approx(0.596, abs=1e-3)


@pytest.mark.parametrize("name", ["kv", "needle", "override", "format"])
def test_tasks_are_seeded_and_spans_are_in_the_prompts(tiny, name):
    tok = tiny[1]
    a = make_task(name, tok, 12, seed=5, max_tokens=512)
    b = make_task(name, tok, 12, seed=5, max_tokens=512)
    c = make_task(name, tok, 12, seed=6, max_tokens=512)
    assert [e.prompt for e in a.examples] == [e.prompt for e in b.examples]
    assert [e.prompt for e in a.examples] != [e.prompt for e in c.examples]
    for e in a.examples:
        assert all(v in e.prompt for v in e.spans.values())
        assert len(tok(e.prompt + e.answers[0])["input_ids"]) <= 512


def test_kv_positions_sweep_the_context(tiny):
    task = make_task("kv", tiny[1], 16, pairs=8)
    assert {e.bucket for e in task.examples} == {"0-20%", "20-40%", "40-60%", "60-80%", "80-100%"}


def test_too_long_tasks_say_what_fits(tiny):
    with pytest.raises(AttnlabError, match=r"at most 128: use --pairs \d+ or fewer"):
        make_task("kv", tiny[1], 4, pairs=64, max_tokens=128)
    with pytest.raises(AttnlabError, match="unknown task"):
        make_task("riddles", tiny[1], 4)
    with pytest.raises(AttnlabError, match="n must be >= 1"):
        make_task("kv", tiny[1], 0)


def test_jsonl_task_with_markers(tiny, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Previously X was Paris, <<but now X is Rome.>> X is", "answer": " Rome", "wrong": [" Paris"]},
        {"prompt": "The sea is <<calm>> today. The sea is", "answers": [" calm"], "wrong": [" rough"]}]))
    task = make_task("jsonl", tiny[1], None, path=str(path), scorer="loglik")
    assert {e.spans["emphasis"][0] for e in task.examples} == {"but now X is Rome.", "calm"}
    result = run(*tiny, task, MethodSpec("pasta", {"alpha": 0.01}))
    assert result["n"] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "no answer"}\n')
    with pytest.raises(AttnlabError, match="line 1: a record needs 'prompt' and 'answer'"):
        make_task("jsonl", tiny[1], None, path=str(bad))


def test_harness_is_paired_and_consistent(tiny):
    task = make_task("override", tiny[1], 24, seed=2)
    r = run(*tiny, task, MethodSpec("pasta", {"alpha": 0.05, "heads": "L1,L2"}))
    u, s = np.array(r["per_example"]["unsteered"]), np.array(r["per_example"]["steered"])
    assert r["unsteered"]["accuracy"] == pytest.approx(u.mean())
    assert r["paired"]["difference"] == pytest.approx(s.mean() - u.mean())
    assert r["mcnemar"]["lost"] == int(((u == 1) & (s == 0)).sum())
    none = run(*tiny, task, None)
    assert none["unsteered"] == none["steered"] and none["per_example"]["unsteered"] == r["per_example"]["unsteered"]


def test_selection_happens_on_the_train_split_only(tiny):
    tok = tiny[1]
    test = make_task("override", tok, 8, seed=0)
    train = make_task("override", tok, 6, seed=1000)
    assert not {e.prompt for e in test.examples} & {e.prompt for e in train.examples}
    r = run(*tiny, test, MethodSpec("zerotuning", {"grid": [0.5, 2.0]}, select="gamma"), train=train)
    assert r["selection"]["gamma"] in (0.5, 2.0)
    assert r["selection"]["on"]["seed"] == 1000
    assert r["method"]["params"]["gamma"] == r["selection"]["gamma"]


def test_method_needing_spans_the_task_lacks(tiny):
    task = make_task("override", tiny[1], 4)
    with pytest.raises(AttnlabError, match="needs the span 'instruction'"):
        run(*tiny, task, MethodSpec("instaboost", {"m": 3}))


def test_cli_eval_and_sweep(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "tiny", "--task", "override", "--method", "pasta", "--n", "12", "--out", str(tmp_path / "a"),
                            "--sweep", "alpha=0.01,0.5"])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert [d["value"] for d in data] == [0.01, 0.5]
    assert (tmp_path / "a" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(app, ["eval", "tiny", "--task", "kv", "--method", "pasta", "--n", "0"])
    assert bad.exit_code == 2 and "--n must be >= 1" in bad.output
    bad = runner.invoke(app, ["eval", "tiny", "--task", "kv", "--method", "wizardry", "--n", "3"])
    assert bad.exit_code == 2 and "unknown method 'wizardry'" in bad.output


def test_bucket_plot_handles_zero_and_full_accuracy(tmp_path):
    from attnlab.evals.plots import bucket_plot

    result = {"buckets": {"a": {"n": 60, "unsteered": 0.0, "steered": 1.0}}, "task": {"name": "kv"},
              "method": {"name": "pasta"}, "n": 60, "paired": {"difference": 1.0, "ci_low": 1.0, "ci_high": 1.0}}
    assert bucket_plot(result, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_selected_heads_are_recorded_as_the_command_line_writes_them(tiny):
    tok = tiny[1]
    test, train = make_task("kv", tok, 4, seed=0, pairs=4), make_task("kv", tok, 4, seed=1000, pairs=4)
    r = run(*tiny, test, MethodSpec("pasta", {"top_k": 2}, select="heads"), train=train)
    label = r["selection"]["heads"]
    assert re.fullmatch(r"L\d+H\d+(,L\d+H\d+)*", label), label
    assert label.split(",") == [name for _, name in r["selection"]["ranking"][:len(label.split(","))]]
    assert r["method"]["params"]["heads"] == label


def test_cli_eval_records_only_applied_settings_and_honours_n_for_jsonl(tmp_path):
    """``--n`` caps a JSONL test split; ``--select`` options are recorded with the choice, not as method settings."""
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"The sea is <<calm>> {i}. The sea is", "answer": " calm",
                                          "wrong": [" rough"]}) for i in range(8)))
    runner = CliRunner()
    plain = runner.invoke(app, ["eval", "tiny", "--task", "jsonl", "--file", str(path), "--scorer", "loglik", "--n", "3",
                                "--set", "alpha=0.05", "--out", str(tmp_path / "a")])
    assert plain.exit_code == 0, plain.output
    data = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert data["n"] == 3 and data["task"]["n"] == 3
    assert data["method"] == {"name": "pasta", "span": "emphasis", "params": {"alpha": 0.05}}
    chosen = runner.invoke(app, ["eval", "tiny", "--task", "jsonl", "--file", str(path), "--scorer", "loglik", "--n", "4",
                                 "--select", "heads", "--set", "top_k=1", "--budget", "3", "--out", str(tmp_path / "b")])
    assert chosen.exit_code == 0, chosen.output
    data = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert data["n"] == 4 and data["task"]["split"] == "test"                    # 8 records: 2 train, the next 4 test
    assert data["selection"]["on"]["split"] == "train" and data["selection"]["on"]["n"] == 2
    assert data["selection"]["options"] == {"top_k": 1, "layers": 0}
    assert set(data["method"]["params"]) == {"heads"} and re.fullmatch(r"L\d+H\d+", data["method"]["params"]["heads"])
    layer, head = map(int, re.fullmatch(r"L(\d+)H(\d+)", data["method"]["params"]["heads"]).groups())
    assert json.loads((tmp_path / "b" / "heads.json").read_text()) == {str(layer): [head]}   # PASTA's head config
    reuse = runner.invoke(app, ["eval", "tiny", "--task", "jsonl", "--file", str(path), "--scorer", "loglik", "--n", "3",
                                "--set", f"heads={tmp_path / 'b' / 'heads.json'}", "--out", str(tmp_path / "c")])
    assert reuse.exit_code == 0, reuse.output


def test_train_split_never_shares_a_prompt_with_the_test_split(tiny):
    """classify draws from a fixed pool: under seeds s and s + 1000 the same text can come up; it is dropped."""
    from attnlab.evals.splits import train_and_test

    tok = tiny[1]
    train, test = train_and_test("classify", tok, 100, seed=0, train_n=48)
    drawn = make_task("classify", tok, 48, seed=1000)
    shared = {e.prompt for e in drawn.examples} & {e.prompt for e in test.examples}
    assert shared                                                   # the pool really does repeat across seeds
    assert not {e.prompt for e in train.examples} & {e.prompt for e in test.examples}
    assert len(train.examples) == 48 - len(shared) == train.params["n"]


def test_run_evals_collect_makes_the_table_from_the_rows_eval_json(tmp_path):
    """``scripts/run_evals.py --collect`` runs nothing: each row present in --out becomes one table line with the
    report's numbers and the n it was run with; rows not there are left out."""
    runner = CliRunner()
    row = tmp_path / "tiny-override-pasta-headsall"
    r = runner.invoke(app, ["eval", "tiny", "--task", "override", "--method", "pasta", "--n", "12", "--set", "heads=all",
                            "--out", str(row)])
    assert r.exit_code == 0, r.output
    report = json.loads((row / "eval.json").read_text())
    script = Path(__file__).parents[1] / "scripts" / "run_evals.py"
    done = subprocess.run([sys.executable, str(script), "--model", "tiny", "--collect", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "tiny-table.md").read_text().splitlines()
    assert len(lines) == 3                                                   # header, rule, the one row present
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    pr = report["paired"]
    verdict = "helps" if pr["ci_low"] > 0 else "hurts" if pr["ci_high"] < 0 else "no clear effect"
    assert cells[:6] == ["tiny", "override (correct)", "pasta", "heads=all", f"{report['unsteered']['accuracy']:.3f}",
                         f"{report['steered']['accuracy']:.3f}"]
    assert cells[10] == verdict
    assert cells[11] == "`attnlab eval tiny --task override --method pasta --n 12 --set heads=all`"
    assert (tmp_path / "tiny-differences.png").read_bytes()[:4] == b"\x89PNG"     # the table as a picture


@pytest.mark.parametrize("low, high, expected", [(0.01, 0.2, "helps"), (-0.3, -0.001, "hurts"),
                                                 (-0.1, 0.1, "no clear effect"), (0.0, 0.0, "no clear effect")])
def test_verdict_needs_the_whole_ci_on_one_side_of_zero(low, high, expected):
    from attnlab.evals.plots import verdict
    assert verdict({"ci_low": low, "ci_high": high}) == expected


def test_run_evals_with_shards_resumes_a_finished_row(tmp_path):
    """``--shard-size``: each row runs as a sharded job kept in its folder, and running the same command again
    resumes it (every shard read back, none run) with the same numbers."""
    script = Path(__file__).parents[1] / "scripts" / "run_evals.py"
    cmd = [sys.executable, str(script), "--model", "tiny", "--n", "20", "--rows", "tiny-override-pasta-headsall",
           "--shard-size", "16", "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "tiny-override-pasta-headsall" / "eval.json").read_text())
    assert report["n"] == 20 and report["run"]["shards"] == 2 and report["run"]["shards_resumed"] == 0
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((tmp_path / "tiny-override-pasta-headsall" / "eval.json").read_text())
    assert resumed["run"]["shards_resumed"] == 2 and resumed["run"]["shards_run"] == 0
    assert resumed["paired"] == report["paired"] and resumed["steered"] == report["steered"]
    assert (tmp_path / "tiny-table.md").read_text().count("| tiny | override") == 1


@pytest.mark.parametrize("args, message", [(["--shard-size", "0"], "--shard-size must be a positive multiple of 16"),
                                           (["--shard-size", "20"], "--shard-size must be a positive multiple of 16"),
                                           (["--n", "-1"], "--n must be >= 1"),
                                           (["--collect"], "holds no eval.json of a --model tiny row")])
def test_run_evals_refuses_bad_arguments_in_one_line(tmp_path, args, message):
    script = Path(__file__).parents[1] / "scripts" / "run_evals.py"
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(script), "--model", "tiny", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]
    assert not out.exists()                                                  # nothing written
