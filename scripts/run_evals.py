"""Run every method x task on the bundled models and write EVALS.md (each row with its exact command).

    python scripts/run_evals.py [--n 300] [--out evals-out] [--only TASK]

Each row is one ``attnlab eval`` command; its JSON, plot and the command line are kept in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

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


def fmt(x: float) -> str:
    return f"{x:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--out", default="evals-out")
    p.add_argument("--only", help="run only this task")
    p.add_argument("--markdown", default="EVALS.md")
    args = p.parse_args()
    out = Path(args.out)
    lines = []
    for model, task, method, extra in ROWS:
        if args.only and task != args.only:
            continue
        name = f"{model}-{task}-{method}" + ("-" + "-".join(a.replace("=", "") for a in extra if not a.startswith("--"))
                                            if extra else "")
        target = out / name
        cmd = ["attnlab", "eval", model, "--task", task, "--method", method, "--n", str(args.n), *extra,
               "--out", str(target), "--overwrite"]
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "attnlab.cli", *cmd[1:]], capture_output=True, text=True)
        if done.returncode != 0:
            lines.append(f"| {model} | {task} | {method} | failed: {done.stderr.strip().splitlines()[-1][:80]} |"
                         f" | | | `{shlex.join(cmd)}` |")
            print("FAILED", shlex.join(cmd), done.stderr[-500:], flush=True)
            continue
        r = json.loads((target / "eval.json").read_text())
        pr = r["paired"]
        sel = r.get("selection") or {}
        chosen = ", ".join(f"{k}={v}" for k, v in sel.items() if k in ("heads", "gamma", "m"))
        settings = ", ".join(f"{k}={v}" for k, v in r["method"]["params"].items() if k not in ("top_k", "grid"))
        verdict = "helps" if pr["ci_low"] > 0 else "hurts" if pr["ci_high"] < 0 else "no clear effect"
        lines.append(f"| {model} | {task} | {method} | {settings or '-'}{' (chosen on train: ' + chosen + ')' if chosen else ''} "
                     f"| {fmt(r['unsteered']['accuracy'])} | {fmt(r['steered']['accuracy'])} | {pr['difference']:+.3f} "
                     f"[{pr['ci_low']:+.3f}, {pr['ci_high']:+.3f}] | {verdict} | `{shlex.join(cmd)}` |")
        print(lines[-1], f"({time.time() - started:.0f}s)", flush=True)
    header = ["| model | task | method | settings | unsteered | steered | difference [95% CI] | verdict | command |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    (out / "table.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(header + lines) + "\n")
    print("\n".join(header + lines))


if __name__ == "__main__":
    main()
