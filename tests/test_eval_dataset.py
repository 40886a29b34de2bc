"""``attnlab eval`` in shards: the single-process report number for number, resumed after an interruption, a
malformed record skipped and counted, a folder of another job refused. (1 vs 2 Ray workers: test_distributed.py.)"""
import json

import pytest
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.distributed.eval_job import REPORT, eval_dataset
from attnlab.errors import AttnlabError
from attnlab.evals.harness import MethodSpec, run
from attnlab.evals.tasks import make_task

PASTA = MethodSpec("pasta", {"alpha": 0.05, "heads": "L1,L2"})


class Interrupted(Exception):
    pass


def _same(report, single):
    """Every figure of the sharded report equals the single-process one (time and the run's record aside)."""
    single = json.loads(json.dumps(single))
    for key in single:
        if key not in ("seconds", "run"):
            assert report[key] == single[key], key


@pytest.fixture(scope="module")
def task(tiny):
    return make_task("override", tiny[1], 10, seed=2)


def test_shards_give_the_single_process_report_number_for_number(tiny, task, tmp_path):
    single = run(*tiny, task, PASTA, batch_size=2)
    report = eval_dataset("tiny", task, PASTA, tmp_path / "out", tokenizer=tiny[1], batch_size=2, shard_size=4,
                          loaded=tiny)
    _same(report, single)
    assert report["run"] == {**report["run"], "workers": 1, "ray": False, "shards": 3, "shards_run": 3,
                             "shard_size": 4}
    assert json.loads((tmp_path / "out" / REPORT).read_text()) == report
    assert len(list((tmp_path / "out" / "partials").iterdir())) == 3


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_report(tiny, task, tmp_path):
    whole = eval_dataset("tiny", task, PASTA, tmp_path / "whole", tokenizer=tiny[1], batch_size=2, shard_size=2,
                         loaded=tiny)

    def stop_after_first(n):
        raise Interrupted

    with pytest.raises(Interrupted):
        eval_dataset("tiny", task, PASTA, tmp_path / "cut", tokenizer=tiny[1], batch_size=2, shard_size=2,
                     loaded=tiny, on_shard=stop_after_first)
    assert not (tmp_path / "cut" / REPORT).exists()
    resumed = eval_dataset("tiny", task, PASTA, tmp_path / "cut", tokenizer=tiny[1], batch_size=2, shard_size=2,
                           loaded=tiny)
    assert resumed["run"]["shards_resumed"] == 1 and resumed["run"]["shards_run"] == 4
    _same(resumed, whole)


def test_a_chosen_setting_is_chosen_once_and_kept_for_the_resumed_job(tiny, task, tmp_path):
    train = make_task("override", tiny[1], 6, seed=1000)
    spec = MethodSpec("zerotuning", {"grid": [0.5, 2.0]}, select="gamma")
    single = run(*tiny, task, spec, train=train, batch_size=2)
    steps = []
    report = eval_dataset("tiny", task, spec, tmp_path / "out", tokenizer=tiny[1], train=train, batch_size=2,
                          shard_size=4, loaded=tiny, on_choose=steps.append)
    _same(report, single)
    assert steps and json.loads((tmp_path / "out" / "selection.json").read_text())["gamma"] == single["selection"]["gamma"]
    steps.clear()
    again = eval_dataset("tiny", task, spec, tmp_path / "out", tokenizer=tiny[1], train=train, batch_size=2,
                         shard_size=4, loaded=tiny, on_choose=steps.append)
    assert not steps and again["run"]["shards_resumed"] == 3
    _same(again, single)


def test_another_job_s_folder_and_a_ragged_shard_size_are_refused(tiny, task, tmp_path):
    eval_dataset("tiny", task, PASTA, tmp_path / "out", tokenizer=tiny[1], batch_size=2, shard_size=4, loaded=tiny)
    other = MethodSpec("pasta", {"alpha": 0.5, "heads": "L1,L2"})
    with pytest.raises(AttnlabError, match=r"partial results of another job \(method differ\)"):
        eval_dataset("tiny", task, other, tmp_path / "out", tokenizer=tiny[1], batch_size=2, shard_size=4, loaded=tiny)
    with pytest.raises(AttnlabError, match="--shard-size 5 is not a multiple of --batch-size 2"):
        eval_dataset("tiny", task, PASTA, tmp_path / "x", tokenizer=tiny[1], batch_size=2, shard_size=5, loaded=tiny)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / REPORT).write_text("{}")
    with pytest.raises(AttnlabError, match="report of another evaluation"):
        eval_dataset("tiny", task, PASTA, tmp_path / "plain", tokenizer=tiny[1], batch_size=2, shard_size=4,
                     loaded=tiny)
    assert (tmp_path / "plain" / REPORT).read_text() == "{}"


def test_cli_sharded_eval_skips_and_counts_a_malformed_record(tmp_path):
    path = tmp_path / "mine.jsonl"
    good = [json.dumps({"prompt": f"The sea is <<calm>> {i}. The sea is", "answer": " calm", "wrong": [" rough"]})
            for i in range(6)]
    path.write_text("\n".join(good[:2] + ["{not json", json.dumps({"prompt": "no answer"})] + good[2:]) + "\n")
    runner = CliRunner()
    args = ["eval", "tiny", "--task", "jsonl", "--file", str(path), "--scorer", "loglik", "--set", "alpha=0.05",
            "--batch-size", "2"]
    strict = runner.invoke(app, args + ["--out", str(tmp_path / "strict")])
    assert strict.exit_code == 2 and "line 3 is not JSON" in strict.output
    sharded = runner.invoke(app, args + ["--shard-size", "2", "--out", str(tmp_path / "a")])
    assert sharded.exit_code == 0, sharded.output
    said = " ".join(sharded.output.split())
    assert "skipped line 3: is not JSON" in said and "2 malformed records skipped" in said, said
    assert "skipped line 4: a record needs 'prompt' and 'answer'" in said
    data = json.loads((tmp_path / "a" / REPORT).read_text())
    assert data["n"] == 6 and data["task"]["skipped_lines"] == 2 and data["run"]["shards"] == 3
    assert [s["line"] for s in data["task"]["skipped"]] == [3, 4]
    assert (tmp_path / "a" / "eval.png").read_bytes()[:4] == b"\x89PNG"
    again = runner.invoke(app, args + ["--shard-size", "2", "--out", str(tmp_path / "a")])   # finished: resumes all
    assert again.exit_code == 0 and "(3 resumed)" in " ".join(again.output.split())
    for extra, message in ((["--workers", "2"], "--workers is the number of Ray workers"),
                           (["--shard-size", "2", "--sweep", "alpha=0.1,0.2"], "--sweep runs one evaluation per value")):
        bad = runner.invoke(app, args + extra)
        assert bad.exit_code == 2 and message in " ".join(bad.output.split()), bad.output
