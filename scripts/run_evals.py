"""Run every method x task on a model and write the EVALS.md table (each row with its exact command).

    python scripts/run_evals.py [--model tiny] [--n 300] [--out evals-out] [--only TASK]
    nohup python scripts/run_evals.py --model smollm2 --n 200 --out evals-smollm2 > evals-smollm2.log 2>&1 &

``--model tiny`` (the default) runs the rows of the bundled ``tiny`` and the ``minilm`` encoder; ``--model
smollm2`` runs each method on its own paper's kind of task in chat form (PASTA: JSON formatting, pronoun
changing, BiasBios, CounterFact; InstABoost and SpotLight: IFEval-style constraints and retrieval; ZeroTuning
and ACT: zero-shot classification and multiple choice; ``--model gemma3``: the Gemma 3 base model's
classification rows, in plain text), heads chosen coarse-to-fine (``layers=3``: 30 whole
layers, then the 27 heads of the best three, instead of all 270 heads). Each row is one ``attnlab eval``
command; its JSON and plot are kept in ``--out/<row>/``, its terminal output in ``--out/<row>.log`` (so a row
still running finishes if this script is stopped), and the table in ``--out/<model>-table.md`` (its picture,
each row's difference and CI, in ``<model>-differences.png``). With ``--shard-size K`` each row runs in shards
of ``K`` test prompts kept in its folder, and the same command run again resumes where it stopped (a resumed
row's seconds are those of its last run only). ``--collect`` runs nothing and makes the table from the rows'
``eval.json`` already in ``--out`` (``docs/evals/rows`` holds the committed ones).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from attnlab.evals.plots import difference_plot, verdict

ROWS = [
    # (model, task, method, extra arguments)
    ("tiny", "kv", "pasta", ["--select", "heads", "--set", "top_k=4"]),
    ("tiny", "kv", "pasta", ["--set", "heads=all"]),
    ("tiny", "kv", "spotlight", []),
    ("tiny", "kv", "instaboost", ["--select", "m"]),
    ("tiny", "kv", "zerotuning", ["--select", "gamma"]),
    ("tiny", "kv", "act", []),
    ("tiny", "needle", "pasta", ["--select", "heads", "--set", "top_k=4"]),
    ("tiny", "needle", "spotlight", []),
    ("tiny", "needle", "instaboost", ["--select", "m"]),
    ("tiny", "needle", "zerotuning", ["--select", "gamma"]),
    ("tiny", "needle", "act", []),
    ("tiny", "override", "pasta", ["--select", "heads", "--set", "top_k=4"]),
    ("tiny", "override", "pasta", ["--set", "heads=all"]),
    ("tiny", "override", "spotlight", []),
    ("tiny", "override", "instaboost", ["--select", "m", "--span", "emphasis"]),
    ("tiny", "override", "zerotuning", ["--select", "gamma"]),
    ("tiny", "override", "act", []),
    ("tiny", "format", "pasta", ["--select", "heads", "--set", "top_k=4", "--span", "instruction"]),
    ("tiny", "format", "spotlight", ["--span", "instruction"]),
    ("tiny", "format", "instaboost", ["--select", "m"]),
    ("tiny", "format", "zerotuning", ["--select", "gamma"]),
    ("tiny", "format", "act", []),
    ("tiny", "format", "act", ["--select", "heads"]),
    ("minilm", "kv-masked", "pasta", ["--set", "heads=all"]),
    ("minilm", "kv-masked", "spotlight", []),
    ("minilm", "kv-masked", "zerotuning", ["--set", "gamma=0.5"]),
    ("minilm", "kv-masked", "act", []),
]


PASTA_HEADS = ["--select", "heads", "--set", "top_k=4", "--set", "layers=3"]
# the heads chosen on BiasBios' train split (session 8), reused where heads cannot be chosen on the task itself:
# a cheap form of PASTA's multi-task profiling (the paper keeps the heads that rank high on several tasks)
BIASBIOS_HEADS = ["--set", "heads=L23H5,L23H8,L23H2,L5H4"]
SMOLLM2_ROWS = [
    ("smollm2", "json-format", "pasta", PASTA_HEADS),
    ("smollm2", "json-format", "pasta", ["--set", "heads=all"]),
    ("smollm2", "json-format", "pasta", ["--set", "heads=all", "--set", "alpha=0.1"]),
    ("smollm2", "json-format", "pasta", ["--set", "heads=all", "--set", "alpha=0.3"]),
    ("smollm2", "json-format", "pasta", ["--set", "heads=all", "--set", "mode=include"]),
    ("smollm2", "json-format", "pasta", ["--set", "heads=all", "--set", "sink=keep"]),   # is the sink the cause?
    ("smollm2", "json-format", "pasta", BIASBIOS_HEADS),
    ("smollm2", "pronouns", "pasta", ["--set", "heads=all"]),   # no answer text to choose heads by
    ("smollm2", "pronouns", "pasta", BIASBIOS_HEADS),
    ("smollm2", "biasbios", "pasta", PASTA_HEADS),
    ("smollm2", "counterfact", "pasta", PASTA_HEADS),
    ("smollm2", "counterfact", "pasta", ["--set", "heads=all"]),
    ("smollm2", "counterfact", "pasta", BIASBIOS_HEADS),
    ("smollm2", "ifeval", "instaboost", []),            # M = 5, the default
    ("smollm2", "ifeval", "instaboost", ["--select", "m", "--set", "grid=1,3,5,9", "--train-n", "32"]),  # by replies
    ("smollm2", "ifeval", "spotlight", ["--span", "instruction"]),
    ("smollm2", "kv", "spotlight", []),
    ("smollm2", "kv", "pasta", ["--set", "heads=all"]),
    ("smollm2", "kv", "pasta", BIASBIOS_HEADS),
    ("smollm2", "kv", "pasta", PASTA_HEADS),
    ("smollm2", "needle", "spotlight", []),
    ("smollm2", "classify", "zerotuning", ["--select", "gamma"]),
    ("smollm2", "classify", "act", []),
    ("smollm2", "choice", "zerotuning", ["--select", "gamma"]),
    ("smollm2", "choice", "act", []),
    ("smollm2", "choice", "act", ["--select", "heads", "--set", "layers=3"]),
]
GEMMA3_ROWS = [                                       # the base model: plain text, label scoring
    ("gemma3", "classify", "zerotuning", ["--select", "gamma"]),
    ("gemma3", "classify", "act", []),
]
MODELS = {"tiny": ROWS, "smollm2": SMOLLM2_ROWS, "gemma3": GEMMA3_ROWS}


def fmt(x: float) -> str:
    return f"{x:.3f}"


def row_name(model: str, task: str, method: str, extra: list[str]) -> str:
    """The row's output folder name: model-task-method plus its setting values (``--rows`` takes these)."""
    values = [a.replace("=", "").replace(",", "_") for a in extra if not a.startswith("--")]
    return f"{model}-{task}-{method}" + ("-" + "-".join(values) if extra else "")


def table_row(model: str, task: str, method: str, cmd: list[str], r: dict) -> str:
    """One EVALS.md table line from a row's ``eval.json`` report ``r``."""
    pr = r["paired"]
    sel = r.get("selection") or {}
    chosen = ", ".join(f"{k}={v}" for k, v in sel.items() if k in ("heads", "gamma", "m"))
    settings = ", ".join(f"{k}={v}" for k, v in r["method"]["params"].items()
                         if k not in ("top_k", "grid") and k not in sel)
    secondary = "; ".join(f"{k} {v['unsteered']:.3f}→{v['steered']:.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
                          for k, v in (r.get("secondary") or {}).items() if k != "parsed") or "-"
    return (f"| {model} | {task} ({r.get('metric', 'accuracy')}) | {method} | {settings or '-'}"
            f"{' (chosen on train: ' + chosen + ')' if chosen else ''} "
            f"| {fmt(r['unsteered']['accuracy'])} | {fmt(r['steered']['accuracy'])} | {pr['difference']:+.3f} "
            f"[{pr['ci_low']:+.3f}, {pr['ci_high']:+.3f}] | {r['mcnemar']['p_value']:.3g} | {secondary} "
            f"| {r['seconds']:.0f} | {verdict(pr)} | `{shlex.join(cmd)}` |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", choices=sorted(MODELS), help="which rows to run")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--out", default="evals-out")
    p.add_argument("--only", help="run only this task")
    p.add_argument("--rows", help="run only these rows, by output folder name (comma list, e.g. smollm2-kv-spotlight)")
    p.add_argument("--shard-size", type=int, help="run each row in shards of this many test prompts (a multiple "
                   "of 16), kept in its folder: run the same command again to resume a stopped row where it was "
                   "(its chosen setting too); without it, a row starts afresh")
    p.add_argument("--collect", action="store_true", help="run nothing: make the table from the eval.json files "
                   "already in --out (rows not there are left out)")
    args = p.parse_args()
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    if args.shard_size is not None and (args.shard_size < 1 or args.shard_size % 16):
        p.error(f"--shard-size must be a positive multiple of 16 (the batch size), got {args.shard_size}")
    out = Path(args.out)
    if args.collect and not any((out / row_name(*row) / "eval.json").is_file() for row in MODELS[args.model]):
        p.error(f"{out} holds no eval.json of a --model {args.model} row: nothing to collect")
    lines, reports = [], []
    for model, task, method, extra in MODELS[args.model]:
        if args.only and task != args.only:
            continue
        name = row_name(model, task, method, extra)
        if args.rows and name not in args.rows.split(","):
            continue
        target = out / name
        cmd = ["attnlab", "eval", model, "--task", task, "--method", method, "--n", str(args.n), *extra]
        if args.collect:
            if (target / "eval.json").is_file():
                report = json.loads((target / "eval.json").read_text())
                cmd[cmd.index("--n") + 1] = str(report["n"])        # the n the row was run with
                lines.append(table_row(model, task, method, cmd, report))
                reports.append((name.removeprefix(f"{model}-"), report))
            continue
        log = out / f"{name}.log"       # the row's output goes to a file: the row survives this script being killed
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as sink:
            resume = ["--shard-size", str(args.shard_size)] if args.shard_size else ["--overwrite"]
            done = subprocess.run([sys.executable, "-m", "attnlab.cli", *cmd[1:], "--out", str(target), *resume],
                                  stdout=sink, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            said = log.read_text(errors="replace").strip().splitlines()
            why = (said or [f"exit code {done.returncode}"])[-1][:80]
            lines.append(f"| {model} | {task} | {method} | failed: {why} |"
                         f" | | | | | | | `{shlex.join(cmd)}` |")
            print("FAILED", shlex.join(cmd), "\n".join(said[-5:]), flush=True)
            continue
        report = json.loads((target / "eval.json").read_text())
        lines.append(table_row(model, task, method, cmd, report))
        reports.append((name.removeprefix(f"{model}-"), report))
        print(lines[-1], flush=True)
    header = ["| model | task (metric) | method | settings | unsteered | steered | difference [95% CI] | McNemar p | "
              "secondary metrics | seconds | verdict | command |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.model}-table.md").write_text("\n".join(header + lines) + "\n")
    if reports:                          # the table as a picture: each row's difference and CI
        difference_plot(reports, out / f"{args.model}-differences.png")
    print("\n".join(header + lines))


if __name__ == "__main__":
    main()
