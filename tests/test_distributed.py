"""``attnlab profile --dataset``: shards merged exactly, resumed after an interruption, spread over Ray workers.

The Ray tests share one local Ray instance (2 CPUs, no dashboard) and skip when Ray (the ``distributed`` extra)
is not installed.
"""
import functools
import json
import os
import signal
import sys

import pytest
import torch

import attnlab
from attnlab.distributed import ray_pool
from attnlab.distributed.eval_job import eval_dataset
from attnlab.distributed.job import REPORT, profile_dataset
from attnlab.distributed.partials import merge, shard_partial
from attnlab.errors import AttnlabError
from attnlab.evals.harness import MethodSpec, run
from attnlab.evals.tasks import make_task

TEXTS = [f"Text {i}: the cat sat on the mat {i} times, and then {'the dog ' * (i % 3)}barked." for i in range(7)]
SETTINGS = {"epsilon": 0.3, "batch_size": 8, "truncate": False}


@pytest.fixture()
def dataset(tmp_path):
    path = tmp_path / "texts.jsonl"
    lines = [json.dumps({"text": t}) for t in TEXTS[:3]] + ["{not json", json.dumps({"id": 4})] + \
        [json.dumps(t) for t in TEXTS[3:]]
    path.write_text("\n".join(lines) + "\n")
    return path


class Interrupted(Exception):
    pass


def test_bad_lines_are_named_counted_and_the_rest_continues(dataset, tmp_path):
    report = profile_dataset("tiny", dataset, tmp_path / "out", shard_size=3)
    assert report["dataset"]["texts"] == 7 and report["dataset"]["skipped_lines"] == 2
    assert [s["line"] for s in report["dataset"]["skipped"]] == [4, 5]
    assert "not valid JSON" in report["dataset"]["skipped"][0]["reason"]
    assert report["run"] == {**report["run"], "workers": 1, "shards": 3, "shards_run": 3, "shards_resumed": 0}
    assert json.loads((tmp_path / "out" / REPORT).read_text()) == report


def test_the_summary_is_profile_s_summary_over_the_same_texts(tiny, dataset, tmp_path):
    report = profile_dataset("tiny", dataset, tmp_path / "out", shard_size=2)
    one = attnlab.profile(tiny[0], TEXTS, tokenizer=tiny[1]).summary
    for name in ("first_token_mass", "entropy"):
        torch.testing.assert_close(torch.tensor(report["summary"][name]), torch.tensor(getattr(one, name)),
                                   rtol=0, atol=2e-5)
    assert report["summary"]["heads_with_sink"] == one.heads_with_sink
    assert report["summary"]["sink_ratio"] == pytest.approx(one.sink_ratio, abs=1e-3)


def test_an_interrupted_job_resumes_to_the_uninterrupted_report(dataset, tmp_path):
    whole = profile_dataset("tiny", dataset, tmp_path / "whole", shard_size=2)

    def stop_after_first(n):
        raise Interrupted

    with pytest.raises(Interrupted):
        profile_dataset("tiny", dataset, tmp_path / "cut", shard_size=2, on_shard=stop_after_first)
    assert sorted(p.name for p in (tmp_path / "cut" / "partials").iterdir()) == ["shard-000000.json"]
    assert not (tmp_path / "cut" / REPORT).exists()
    resumed = profile_dataset("tiny", dataset, tmp_path / "cut", shard_size=2)
    assert resumed["run"]["shards_resumed"] == 1 and resumed["run"]["shards_run"] == 3
    assert resumed["summary"] == whole["summary"] and resumed["dataset"]["texts"] == whole["dataset"]["texts"]


def test_a_folder_of_another_job_is_refused(dataset, tmp_path):
    profile_dataset("tiny", dataset, tmp_path / "out", shard_size=3)
    with pytest.raises(AttnlabError, match="partial results of another job .*shard_size"):
        profile_dataset("tiny", dataset, tmp_path / "out", shard_size=2)
    (tmp_path / "orphan" / "partials").mkdir(parents=True)
    with pytest.raises(AttnlabError, match="without a job.json"):
        profile_dataset("tiny", dataset, tmp_path / "orphan")


def test_a_ray_address_that_does_not_answer_is_named_at_once():
    with pytest.raises(AttnlabError, match=r"Ray cluster at 127\.0\.0\.1:1 did not answer within"):
        ray_pool.check_address("127.0.0.1:1")
    with pytest.raises(AttnlabError, match="not host:port"):
        ray_pool.check_address("nowhere")


def test_without_ray_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AttnlabError, match=r"pip install 'attnlab\[distributed\]'"):
        ray_pool.import_ray()


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="Ray is the distributed extra: pip install 'attnlab[distributed]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_one_and_two_workers_give_the_single_process_report(ray, dataset, tmp_path):
    alone = profile_dataset("tiny", dataset, tmp_path / "alone", shard_size=2)
    reports = [profile_dataset("tiny", dataset, tmp_path / f"w{n}", shard_size=2, workers=n) for n in (1, 2)]
    for report, n in zip(reports, (1, 2)):
        assert report["summary"] == alone["summary"]
        assert report["dataset"] == {**alone["dataset"], "path": report["dataset"]["path"]}
        assert report["run"]["workers"] == n and report["run"]["ray"] and report["run"]["shards"] == 4
        assert len(report["run"]["peak_rss_mib"]) == n and all(m > 50 for m in report["run"]["peak_rss_mib"])


def test_an_evaluation_on_one_and_two_workers_is_the_single_process_report(ray, tiny, tmp_path):
    task = make_task("override", tiny[1], 8, seed=2)
    spec = MethodSpec("pasta", {"alpha": 0.05, "heads": "L1,L2"})
    single = run(*tiny, task, spec, batch_size=2)
    for n in (1, 2):
        report = eval_dataset("tiny", task, spec, tmp_path / f"w{n}", tokenizer=tiny[1], batch_size=2, shard_size=2,
                              workers=n)
        expected = json.loads(json.dumps({k: v for k, v in single.items() if k != "seconds"}))
        assert {k: report[k] for k in expected} == expected
        assert report["run"]["workers"] == n and report["run"]["ray"] and report["run"]["shards"] == 4


def test_a_killed_worker_s_shard_is_retried(ray, tiny):
    shards = [(i, [text]) for i, text in enumerate(TEXTS[:5])]
    expected = merge([shard_partial(*tiny, i, texts, **SETTINGS) for i, texts in shards])
    pool = ray_pool.RayPool(ray, 2, "tiny", None, functools.partial(shard_partial, **SETTINGS))
    try:
        pids = ray.get([actor.pid.remote() for actor in pool.actors])
        partials = []
        for partial in pool.run(shards):
            if not partials:                      # both workers hold a shard now: kill them mid-job
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
            partials.append(partial)
        assert set(ray.get([actor.pid.remote() for actor in pool.actors])).isdisjoint(pids)
    finally:
        pool.close()
    assert sorted(p["shard"] for p in partials) == list(range(5))
    got = merge(partials)
    assert all(torch.equal(got["means"][k], expected["means"][k]) for k in expected["means"])


def test_more_workers_than_the_instance_has_cpus_are_refused(ray):
    with pytest.raises(AttnlabError, match="3 workers need 3 CPUs but the Ray instance has 2"):
        ray_pool.start_ray(3)
