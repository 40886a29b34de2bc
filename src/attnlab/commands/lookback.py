"""``attnlab lookback fit|score|generate``: the Lookback Lens (Chuang et al. 2024) on the command line.

``fit`` generates and labels replies on the tasks of :mod:`attnlab.lookback.data` (cached), fits a detector and
writes it as JSON with its held-out AUROC; ``score`` says how likely a reply is faithful to its context;
``generate`` decodes with the detector choosing among sampled chunks. The work lives in :mod:`attnlab.lookback`.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from attnlab.cli import MODEL_ARGUMENT, app, console, output_dir, progress_bar, run, set_threads, write_folder
from attnlab.errors import AttnlabError

lookback_app = typer.Typer(no_args_is_help=True, help="Lookback Lens (Chuang et al. 2024): detect and reduce "
                           "contextual hallucinations from the lookback ratio of every head.")
app.add_typer(lookback_app, name="lookback")

DETECTOR_OPTION = typer.Option(..., "--detector", "-d", help="a detector JSON written by 'attnlab lookback fit'")
CONTEXT_OPTION = typer.Option(None, "--context", "-c", help="the context the reply must stay faithful to")
QUESTION_OPTION = typer.Option(None, "--question", "-q", help="the question or request about the context")
FIT_FILES = ["detector.json", "fit.json"]


def _message(context: Optional[str], question: Optional[str], command: str) -> str:
    """The user's message, refusing a missing context or question in one line each."""
    from attnlab.lookback.data import context_message

    if context is None or not context.strip():
        raise AttnlabError(f"lookback {command} needs the context the reply must be faithful to: pass --context TEXT "
                           "(the lookback ratio measures attention on it)")
    if question is None or not question.strip():
        raise AttnlabError(f"lookback {command} needs a question or request about the context: pass --question TEXT")
    return context_message(context, question)


def _load_checked(model: str, detector: Path):
    """The detector, then the model, refusing a model whose layers x heads differ from the detector's."""
    import attnlab
    from attnlab.lookback import LookbackDetector

    det = LookbackDetector.load(detector)
    with console.status(f"loading {model}"):
        m, tok = attnlab.load(model)
    if not m.can_generate():
        raise AttnlabError(f"{model} is an encoder ({type(m).__name__}): the Lookback Lens needs a causal LM such as "
                           "smollm2")
    det.check_model(m, model)
    return det, m, tok


@lookback_app.command()
def fit(
    model: str = MODEL_ARGUMENT,
    task: list[str] = typer.Option(["counterfact", "records"], "--task", "-t", help="counterfact, records "
                                   "(repeatable; default both)"),
    setting: str = typer.Option("span", help="span (mean over a predefined span) or window (sliding window)"),
    window: int = typer.Option(8, help="window setting: tokens per window (8 in the paper)"),
    n: int = typer.Option(72, help="examples per task (counterfact: at most 96)"),
    samples: int = typer.Option(1, help="sampled replies per example, besides the greedy one"),
    max_new_tokens: int = typer.Option(24),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None, help="folder for the generated replies (default: --out/data); "
                                         "replies generated with the same settings are reused"),
    out: Optional[str] = typer.Option(None, help="output folder (default: attnlab-out/lookback-fit-<time>)"),
    overwrite: bool = typer.Option(False, help="replace detector.json / fit.json already in --out"),
    threads: int = typer.Option(1, help="torch threads"),
):
    """Generate and label replies, fit a Lookback Lens detector; write detector.json and fit.json (AUROC)."""
    def body():
        import numpy as np

        import attnlab
        from attnlab.lookback import data, evaluate, features
        from attnlab.lookback.detector import SETTINGS, LookbackDetector
        from attnlab.lookback.probe import Prompt, teacher_forced
        from attnlab.models.config import ModelShape

        set_threads(threads)
        unknown = [t for t in task if t not in data.TASKS]
        if unknown:
            raise AttnlabError(f"unknown task '{unknown[0]}': choose from {', '.join(data.TASKS)}")
        if setting not in SETTINGS:
            raise AttnlabError(f"unknown --setting '{setting}': choose {' or '.join(SETTINGS)}")
        for name, value in (("--n", n), ("--window", window), ("--max-new-tokens", max_new_tokens)):
            if value < 1:
                raise AttnlabError(f"{name} must be >= 1, got {value}")
        if samples < 0:
            raise AttnlabError(f"--samples must be >= 0, got {samples}")
        target = output_dir(out, "lookback-fit", FIT_FILES, overwrite)
        with console.status(f"loading {model}"):
            m, tok = attnlab.load(model)
        if not m.can_generate():
            raise AttnlabError(f"{model} is an encoder ({type(m).__name__}): the Lookback Lens needs a causal LM")
        shape = ModelShape.of(m)
        tables, held = {}, {}
        with progress_bar() as bar:
            for name in task:
                total = len(data.examples_for(name, n, seed)) * (samples + 1)
                job = bar.add_task(f"{name}: replies", total=total)
                built = data.build(m, tok, name, n=n, samples=samples, max_new_tokens=max_new_tokens,
                                   temperature=0.9, top_p=0.95, seed=seed, cache=cache or target / "data",
                                   model_name=model, on_progress=lambda k: bar.advance(job, k))
                bar.update(job, completed=total)       # also when the replies came from the cache
                items = built["items"]
                job = bar.add_task(f"{name}: lookback ratios", total=len(items))
                traces = teacher_forced(m, tok, [Prompt(tuple(i["prompt_ids"]), i["context_end"]) for i in items],
                                        [i["reply_ids"] for i in items], on_batch=lambda k: bar.advance(job, k))
                tables[name] = features.table(traces, items, setting, window)
                held[name] = data.split_groups([i["group"] for i in items], 0.2, seed)
        train = {t: ~np.isin(tab["group"], list(held[t])) for t, tab in tables.items()}
        X = np.concatenate([tab["lookback"][train[t]] for t, tab in tables.items()])
        y = np.concatenate([tab["y"][train[t]] for t, tab in tables.items()])
        det = LookbackDetector(shape.n_layers, shape.n_heads, setting=setting, window=window, model_name=model)
        det.fit(X, y)
        report = {"model": model, "setting": setting, "window": window, "tasks": list(task), "n": n,
                  "samples": samples, "seed": seed, "command": "attnlab " + " ".join(map(shlex.quote, sys.argv[1:])),
                  "held_out": {}}
        for t, tab in tables.items():
            rows = ~train[t]
            report["held_out"][t] = {
                "lookback_lens": evaluate.auroc_ci(tab["y"][rows], det.predict_proba(tab["lookback"][rows])[:, 1],
                                                   tab["group"][rows]),
                "logprob": evaluate.auroc_ci(tab["y"][rows], tab["logprob"][rows], tab["group"][rows])}
        write_folder(target)
        det.save(target / "detector.json")
        (target / "fit.json").write_text(json.dumps(report, indent=1))
        for t, r in report["held_out"].items():
            lens, lp = r["lookback_lens"], r["logprob"]
            shown = "n/a (one class)" if lens["auroc"] is None else (
                f"{lens['auroc']:.3f} [{lens['ci_low']:.3f}, {lens['ci_high']:.3f}] (log-prob baseline "
                f"{lp['auroc']:.3f})")
            console.print(f"{t}: held-out AUROC {shown}, {lens['n']} {setting}s of {lens['n_examples']} examples")
        console.print(f"wrote {', '.join(str(target / f) for f in FIT_FILES)}")
    run(body)


@lookback_app.command()
def score(
    model: str = MODEL_ARGUMENT,
    detector: Path = DETECTOR_OPTION,
    context: Optional[str] = CONTEXT_OPTION,
    question: Optional[str] = QUESTION_OPTION,
    reply: str = typer.Option(..., "--reply", "-r", help="the reply to score"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """P(faithful) of a reply to a context: over the whole reply, and per window of the detector's size."""
    def body():
        import numpy as np
        from rich.table import Table

        from attnlab.lookback.features import lookback_features, window_units
        from attnlab.lookback.probe import lookback_prompt, teacher_forced

        message = _message(context, question, "score")
        if not reply.strip():
            raise AttnlabError("--reply is empty: give the reply to score")
        det, m, tok = _load_checked(model, detector)
        ids = list(tok(reply, add_special_tokens=False)["input_ids"])
        trace = teacher_forced(m, tok, [lookback_prompt(tok, message)], [ids])[0]
        whole = float(det.predict_proba(lookback_features(trace.ratios, np.arange(len(ids)))[None])[0, 1])
        windows = [(tok.decode([ids[i] for i in tokens]),
                    float(det.predict_proba(lookback_features(trace.ratios, tokens)[None])[0, 1]))
                   for tokens, _ in window_units(np.ones(len(ids), dtype=int), det.window)]
        result = {"model": model, "detector": str(detector), "setting": det.setting, "p_faithful": whole,
                  "windows": [{"text": text, "p_faithful": p} for text, p in windows]}
        if as_json:
            print(json.dumps(result, indent=1))
            return
        console.print(f"P(faithful) of the whole reply: [bold]{whole:.3f}[/bold] ({det.setting} detector)")
        if windows:
            table = Table(title=f"windows of {det.window} tokens")
            table.add_column("window")
            table.add_column("P(faithful)", justify="right")
            for text, p in windows:
                table.add_row(text, f"{p:.3f}")
            console.print(table)
    run(body)


@lookback_app.command()
def generate(
    model: str = MODEL_ARGUMENT,
    detector: Path = DETECTOR_OPTION,
    context: Optional[str] = CONTEXT_OPTION,
    question: Optional[str] = QUESTION_OPTION,
    candidates: int = typer.Option(8, help="sampled candidates per chunk (8 in the paper's README)"),
    chunk: int = typer.Option(8, help="tokens per chunk"),
    max_new_tokens: int = typer.Option(24),
    temperature: float = typer.Option(0.9),
    top_p: float = typer.Option(0.95),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch threads"),
):
    """Lookback-guided decoding: sample chunks, keep the one the detector finds most faithful, repeat."""
    def body():
        import torch

        from attnlab.lookback.decoding import guided_generate
        from attnlab.lookback.probe import lookback_prompt

        set_threads(threads)
        message = _message(context, question, "generate")
        if not temperature > 0:
            raise AttnlabError(f"--temperature must be > 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise AttnlabError(f"--top-p must be in (0, 1], got {top_p}")
        det, m, tok = _load_checked(model, detector)
        torch.manual_seed(seed)
        with console.status("decoding"):
            ids, scores = guided_generate(m, tok, lookback_prompt(tok, message), lambda X: det.predict_proba(X)[:, 1],
                                          candidates=candidates, chunk=chunk, max_new_tokens=max_new_tokens,
                                          temperature=temperature, top_p=top_p)
        console.print(tok.decode(ids, skip_special_tokens=True))
        console.print(f"chunk scores P(faithful): {', '.join(f'{s:.3f}' for s in scores)}")
    run(body)
