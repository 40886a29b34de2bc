"""``attnlab heads``: score every head for its role (induction, retrieval, dormant, ...) in one report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from attnlab.cli import (DTYPE_OPTION, MODEL_ARGUMENT, app, console, output_dir, progress_bar, read_text_file, run,
                         set_threads, write_folder)
from attnlab.errors import AttnlabError

HEADS_FILES = ["heads.json", "heads.png"]
ABLATION_FILES = ["ablation.json", "ablation.png"]
IMPORTANCE_FILES = ["importance.json", "importance.png", "pruning.png"]
DEFAULT_ABLATION_TASK = {"retrieval": "needle", "induction": "induction"}


@app.command()
def heads(
    model: str = MODEL_ARGUMENT,
    scores: Optional[str] = typer.Option(None, help="comma list of scores to measure and show (default: all that "
                                         "apply): previous_token, induction, duplicate_token, retrieval, "
                                         "first_token_mass, local, mean_distance, output_norm, dormant, cls_mass, "
                                         "sep_mass, punctuation_mass"),
    top: int = typer.Option(5, help="heads shown per score"),
    show: Optional[str] = typer.Option(None, "--heads", help="also print every score of these heads, e.g. "
                                       "'L3H1,L5H0-2'"),
    text: list[str] = typer.Option([], "--text", "-t", help="a natural text for the sink, local, dormant and "
                                   "delimiter scores (repeatable; default: built-in prose)"),
    file: list[Path] = typer.Option([], "--file", "-f", help="a UTF-8 file, one text per file (repeatable)"),
    length: int = typer.Option(50, help="random tokens per copy for previous-token / induction / duplicate-token"),
    batch: int = typer.Option(8, help="rows of repeated random tokens"),
    seed: int = typer.Option(0, help="seed of the random tokens and of the haystack passages"),
    context_tokens: Optional[int] = typer.Option(None, help="haystack tokens around the retrieval needle "
                                                 "(default: 1000, cut to the model's positions)"),
    window: int = typer.Option(4, help="the local score's window, in tokens"),
    min_copy: float = typer.Option(0.5, help="retrieval: keep needle examples the model copies better than this"),
    dormant_sink: float = typer.Option(0.5, help="dormant: first-token mass at least this"),
    dormant_norm: float = typer.Option(0.5, help="dormant: output norm over the layer's mean at most this"),
    ablate: Optional[str] = typer.Option(None, help="prove a role by ablation (Wu et al. 2024): mask the top-K heads "
                                         "of this score (retrieval, induction, ...) and K random heads, and draw "
                                         "the task curves over K"),
    ablate_task: Optional[str] = typer.Option(None, help="task of --ablate: needle, induction or text (default: "
                                              "needle for retrieval, induction for induction, else text)"),
    ks: str = typer.Option("0,1,2,4,8,16,32", help="--ablate: the numbers of heads masked"),
    draws: int = typer.Option(3, help="--ablate / --importance: random head sets per K"),
    n: int = typer.Option(50, help="--ablate / --importance: examples of the task"),
    importance: bool = typer.Option(False, help="head importance E|dL/dxi| (Michel et al. 2019) on prose, and the "
                                    "pruning curve (least important heads masked vs random)"),
    out: Optional[str] = typer.Option(None, help="output folder (default: attnlab-out/heads-<time>)"),
    overwrite: bool = typer.Option(False, help="replace heads.json / heads.png already in --out"),
    threads: Optional[int] = typer.Option(None, help="torch threads (default: torch's choice)"),
    dtype: Optional[str] = DTYPE_OPTION,
    trust_remote_code: bool = typer.Option(False, help="run the model repo's own code (only for code you trust)"),
):
    """Score every (layer, head): previous-token, induction, duplicate-token, retrieval (Wu et al. 2024), local,
    first-token sink, output norm and dormancy (Guo et al. 2024), delimiter mass on encoders (Clark et al. 2019).

    Prints the top heads per score; writes heads.json (every value, with definitions and provenance) and heads.png
    (a layers x heads panel per score) to --out.
    """
    def body():
        import attnlab
        from attnlab.heads import head_scores
        from attnlab.models.config import ModelShape

        if threads is not None:
            set_threads(threads)
        if top < 1:
            raise AttnlabError(f"--top must be >= 1, got {top}")
        names = None
        if scores is not None:
            names = [s.strip() for s in scores.split(",") if s.strip()]
            if not names:
                raise AttnlabError("--scores is empty: name scores like induction,retrieval (or leave --scores out)")
        if show is not None and not show.strip():
            raise AttnlabError("--heads is empty: name heads like L1 or L0H1,L2H0-3 (or leave --heads out)")
        texts = list(text) + [read_text_file(f) for f in file]
        k_values = parse_ks(ks)
        if n < 1 or draws < 1:
            raise AttnlabError(f"--n and --draws must be >= 1, got {n} and {draws}")
        if ablate is not None:
            from attnlab.heads import SCORES

            if ablate not in SCORES:
                raise AttnlabError(f"unknown --ablate score '{ablate}': choose from {', '.join(SCORES)}")
            if names is not None and ablate not in names:
                names.append(ablate)
            task_name = ablate_task or DEFAULT_ABLATION_TASK.get(ablate, "text")
            from attnlab.heads.ablation import TASKS

            if task_name not in TASKS:
                raise AttnlabError(f"unknown --ablate-task '{task_name}': use one of {', '.join(TASKS)}")
        files = HEADS_FILES + (ABLATION_FILES if ablate else []) + (IMPORTANCE_FILES if importance else [])
        target = output_dir(out, "heads", files, overwrite)
        with console.status(f"loading {model}"):
            m, tok = attnlab.load(model, dtype=dtype, trust_remote_code=trust_remote_code)
        shape = ModelShape.of(m)
        chosen = attnlab.HeadSet.parse(show, shape.n_layers, shape.n_heads) if show is not None else None
        with progress_bar() as bar:
            task = bar.add_task("forwards", total=None)
            report = head_scores(m, tok, scores=names, length=length, batch=batch, seed=seed, texts=texts or None,
                                 context_tokens=context_tokens, window=window, dormant_sink=dormant_sink,
                                 dormant_norm=dormant_norm, min_copy=min_copy,
                                 on_progress=lambda done, total: bar.update(task, completed=done, total=total))
        print_heads(report, top, chosen)
        write_folder(target)
        from attnlab.heads.plots import heads_grid

        (target / "heads.json").write_text(report.model_dump_json(indent=1))
        heads_grid(report, target / "heads.png")
        if ablate is not None:
            write_ablation(m, tok, report, ablate, task_name, k_values, draws, n, seed, target)
        if importance:
            write_importance(m, tok, n, draws, seed, target)
        console.print(f"wrote {', '.join(str(target / name) for name in files)}")
    run(body)


def parse_ks(text: str) -> list[int]:
    """``--ks 0,1,2,4`` as numbers of heads (checked against the model's head count by the ablation)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AttnlabError(f"--ks must be whole numbers separated by commas, got '{text}'") from None
    if not values or min(values) < 0:
        raise AttnlabError(f"--ks must be numbers of heads >= 0, got '{text}'")
    return values


def write_ablation(model, tokenizer, report, score: str, task: str, ks, draws, n, seed, target) -> None:
    """``--ablate``: mask the top-K heads of ``score`` and K random heads on ``task`` (another seed than the scores'),
    print the curve and write ablation.json / ablation.png."""
    import json

    import torch

    from attnlab.heads.ablation import ablation_curves

    found = report.scores.get(score)
    if found is None or found.values is None:
        raise AttnlabError(f"cannot ablate by '{score}': it was not measured on this model "
                           f"(measured: {', '.join(k for k, v in report.scores.items() if v.values is not None)})")
    values = torch.tensor(found.values, dtype=torch.float64)
    ranking = values if found.order == "high" else -values
    with console.status(f"ablation: top-K {score} heads vs random on {task}"):
        curves = ablation_curves(model, tokenizer, ranking, task=task, ks=ks, draws=draws, n=n, seed=seed + 1,
                                 label=f"top-K {score} heads")
    data = curves.to_json()
    (target / "ablation.json").write_text(json.dumps({"ranked_by": score, **data}, indent=1))
    curves.plot(target / "ablation.png")
    console.print(f"[bold]ablation[/bold] ({task}, n={data['n']}, {data['draws']} random draws): accuracy with K "
                  f"heads masked, top-K {score} vs random [95% CI]")
    for row in data["curve"]:
        r, q = row["ranked"]["accuracy"], row["random"]["accuracy"]
        console.print(f"  K={row['k']:>3}  ranked {r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]  "
                      f"random {q['mean']:.3f} [{q['ci95'][0]:.3f}, {q['ci95'][1]:.3f}]")


def write_importance(model, tokenizer, n, draws, seed, target) -> None:
    """``--importance``: gradient importance on prose (Michel et al. 2019), its top heads, and the pruning curve on
    other prose windows; writes importance.json, importance.png and pruning.png."""
    import json

    from attnlab.heads.importance import head_importance, pruning_curve

    with console.status("importance: E|dL/dxi| on prose"):
        found = head_importance(model, tokenizer, task="text", n=n, seed=seed)
    with console.status("pruning curve: least important heads masked vs random"):
        curve = pruning_curve(model, tokenizer, found, task="text", draws=draws, n=n, seed=seed + 1)
    (target / "importance.json").write_text(json.dumps({**found.to_json(), "pruning": curve.to_json()}, indent=1))
    found.plot(target / "importance.png")
    curve.plot(target / "pruning.png")
    top = ", ".join(f"{row['head']} {row['importance']:.3f}" for row in found.table(5))
    console.print(f"[bold]importance[/bold] (l2-normalised per layer), top 5: {top}")
    for row in curve.to_json()["curve"]:
        console.print(f"  {100 * row['fraction']:.0f}% least important masked: token accuracy "
                      f"{row['ranked']['accuracy']['mean']:.3f} (random heads {row['random']['accuracy']['mean']:.3f})")


def print_heads(report, top: int, chosen=None) -> None:
    """The tables of ``attnlab heads``: the top heads per score, then every score of the ``chosen`` heads."""
    from rich.table import Table

    from attnlab.heads import top_heads
    from attnlab.spans import head_name

    table = Table(title=f"{report.model.name}: top {top} heads per score ({report.model.n_layers} layers x "
                        f"{report.model.n_heads} heads)")
    for col in ("score", "flagged", f"top {top} (best first)"):
        table.add_column(col, justify="left" if col != "flagged" else "right")
    for name, score in report.scores.items():
        rule = "-" if score.threshold is None else f"{len(score.flagged)} {'>' if score.order == 'high' else '<='} " \
                                                    f"{score.threshold:g}"
        best = "  ".join(f"{h} {v:.3f}" for h, v in top_heads(score, top)) or (score.note or "not measured")
        table.add_row(name, rule, best)
    console.print(table)
    if chosen is not None:
        per_head = Table(title="chosen heads")
        per_head.add_column("head")
        for name in report.scores:
            per_head.add_column(name, justify="right")
        for layer, head in chosen:
            per_head.add_row(head_name(layer, head), *("-" if s.values is None else f"{s.values[layer][head]:.3f}"
                                                       for s in report.scores.values()))
        console.print(per_head)
    kept = [e for e in report.needle_examples if e.kept]
    if report.needle_examples:
        console.print(f"retrieval: {len(kept)} of {len(report.needle_examples)} needle copies kept (greedy copy "
                      f"accuracy > {report.settings['min_copy']}); "
                      f"{sum(e.scored_tokens for e in kept)} copied tokens scored")
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in report.runtime_s.items())
    console.print(f"time per group of inputs: {seconds}")
