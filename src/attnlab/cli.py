"""The ``attnlab`` command line."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from attnlab.errors import AttnlabError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="See, measure and steer where a transformer's attention goes.")
console = Console()
DTYPE_OPTION = typer.Option(None, help="float32 (default), float16 or bfloat16")
MODEL_ARGUMENT = typer.Argument("smollm2", help="alias (smollm2, gemma3, tiny, minilm), a local folder, a .gguf "
                                "file or a hub id")
CHAT_OPTION = typer.Option(None, "--chat/--no-chat", help="wrap the prompt in the model's chat template (default: on "
                           "when the model has one)")
DEVICE_OPTION = typer.Option("cpu", help="cpu, cuda, cuda:1, mps (a GPU needs a CUDA build of torch)")
err_console = Console(stderr=True, soft_wrap=True)


def read_text_file(path: Path) -> str:
    """Read a UTF-8 text file named by the user, with a one-line error when that is not possible."""
    if not path.is_file():
        raise AttnlabError(f"{path} is not a file: give the path of a UTF-8 text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AttnlabError(f"{path} is not UTF-8 text: convert it first (e.g. iconv -t UTF-8)") from None
    if not text.strip():
        raise AttnlabError(f"{path} is empty: give a file with some text")
    return text


def output_dir(out: Optional[str], command: str, names: list[str], overwrite: bool) -> Path:
    """Where to write: ``out`` or ``attnlab-out/<command>-<time>``, checked before any work (not yet made).

    Refuses an empty ``--out``, an ``--out`` that is a file, and files already there unless ``overwrite``;
    :func:`write_folder` makes the folder when there is something to write.
    """
    if out is not None and not out.strip():
        raise AttnlabError("--out is empty: give a folder (or leave --out out to write to attnlab-out/)")
    folder = Path(out) if out is not None else Path("attnlab-out") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if folder.exists() and not folder.is_dir():
        raise AttnlabError(f"--out {folder} is a file: give a folder")
    existing = [n for n in names if (folder / n).exists()]
    if existing and not overwrite:
        raise AttnlabError(f"{folder / existing[0]} already exists: choose another --out or pass --overwrite")
    return folder


def write_folder(folder: Path) -> Path:
    """Make the output folder, once the results are there to write."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def progress_bar() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=True)


def use_chat(chat: Optional[bool], tokenizer) -> bool:
    """``--chat`` as asked, or on by default for a tokenizer with a chat template."""
    from attnlab.spans import has_chat_template

    return has_chat_template(tokenizer) if chat is None else chat


def encoder_refusal(name: str, model, command: str) -> str:
    """The one line refusing ``command`` (steer, generate) on a model that cannot generate."""
    return (f"{name} is an encoder ({type(model).__name__}), which cannot generate: {command} needs a causal LM such "
            "as smollm2, gemma3 or tiny (profile works on encoders; eval too, with --task kv-masked)")


def run(fn):
    """Run a command body; bad input ends with one red line and exit code 2, never a traceback."""
    try:
        return fn()
    except AttnlabError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)


@app.command()
def profile(
    model: str = MODEL_ARGUMENT,
    text: list[str] = typer.Option([], "--text", "-t", help="a text to analyse (repeatable)"),
    file: list[Path] = typer.Option([], "--file", "-f", help="a UTF-8 file, one text per file (repeatable)"),
    span: list[str] = typer.Option([], "--span", "-s", help="a piece of the text(s) to measure attention on"),
    maps: Optional[str] = typer.Option(None, help="also draw full attention maps of these heads for the first "
                                       "text, e.g. 'L1' or 'L0H1,L2H0-3' (short texts only)"),
    out: Optional[str] = typer.Option(None, help="output folder (default: attnlab-out/profile-<time>)"),
    overwrite: bool = typer.Option(False, help="replace report files already in --out"),
    html: bool = typer.Option(False, "--html", help="also write profile.html: the head grid as one self-contained "
                              "page (the viewer of attnlab serve, read-only; opens without a server)"),
    epsilon: float = typer.Option(0.3, help="Sink ratio threshold (Gu et al.)"),
    truncate: bool = typer.Option(False, help="cut texts longer than the model's positions instead of refusing"),
    batch_size: int = typer.Option(8, min=1),
    dtype: Optional[str] = DTYPE_OPTION,
    trust_remote_code: bool = typer.Option(False, help="run the model repo's own code (only for code you trust)"),
    dataset: Optional[Path] = typer.Option(None, help="a JSONL data set ({\"text\": ...} per line): profiled in "
                                           "shards into --out/dataset_profile.json (summary only); rerun with the "
                                           "same --out to resume"),
    use_ray: bool = typer.Option(False, "--ray", help="with --dataset: run the shards on a local Ray instance"),
    ray_address: Optional[str] = typer.Option(None, help="with --dataset: run on the Ray cluster at this address"),
    workers: Optional[int] = typer.Option(None, min=1, help="with --ray: number of workers, one model each "
                                          "(default 2)"),
    shard_size: int = typer.Option(64, min=1, help="with --dataset: texts per shard (the unit of resuming)"),
    device: str = DEVICE_OPTION,
):
    """Profile attention sinks: first-token mass, Sink ratio and entropy per layer and head.

    Writes profile.json (every number, with provenance) and profile_heatmap.png to --out (and profile.html with
    --html). With --dataset, writes dataset_profile.json: the summary over every text of a JSONL data set.
    """
    if dataset is not None:
        from attnlab.commands.profile_dataset import profile_dataset_command

        given = [name for name, value in (("--text", text), ("--file", file), ("--span", span), ("--maps", maps),
                                          ("--html", html), ("--trust-remote-code", trust_remote_code)) if value]
        run(lambda: profile_dataset_command(model, dataset, out=out, use_ray=use_ray, ray_address=ray_address,
                                            workers=workers, shard_size=shard_size, epsilon=epsilon,
                                            truncate=truncate, batch_size=batch_size, dtype=dtype,
                                            device=device, other_inputs=given))
        return
    if use_ray or ray_address or workers is not None:
        err_console.print("[red]error:[/red] --ray, --ray-address and --workers go with --dataset")
        raise typer.Exit(2)

    def body():
        import attnlab
        from attnlab.collect import check_map_budget, encode
        from attnlab.models.config import ModelShape
        from attnlab.report.plots import attention_maps, profile_heatmap
        from attnlab.report.table import print_report

        texts = list(text) + [read_text_file(f) for f in file]
        if maps is not None and not maps.strip():
            raise AttnlabError("--maps is empty: name heads like L1 or L0H1,L2H0-3 (or leave --maps out)")
        names = ["profile.json", "profile_heatmap.png"] + (["attention_maps.png"] if maps else []) + \
            (["profile.html"] if html else [])
        target = output_dir(out, "profile", names, overwrite)
        with console.status(f"loading {model}"):
            m, tok = attnlab.load(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        first = texts[0] if texts else attnlab.profile_sample_text()
        if maps:
            shape = ModelShape.of(m)
            heads = attnlab.HeadSet.parse(maps, shape.n_layers, shape.n_heads)
            check_map_budget(shape, 1, encode(tok, [first], shape, truncate=truncate).input_ids.shape[1])
        spans = {s: s for s in span}
        with progress_bar() as bar:
            task = bar.add_task("profiling", total=len(texts) or 1)
            report = attnlab.profile(m, texts or None, tokenizer=tok, spans=spans, epsilon=epsilon, truncate=truncate,
                                     batch_size=batch_size, on_batch=lambda n: bar.advance(task, n))
        maps_of_first = attnlab.collect(m, tok, [first], probes=("attention_maps",), truncate=truncate) if maps else None
        print_report(report, console)
        write_folder(target)
        (target / "profile.json").write_text(report.model_dump_json(indent=1))
        profile_heatmap(report, target / "profile_heatmap.png")
        if html:
            from attnlab.serve.export import profile_snapshot

            profile_snapshot(report).save(target / "profile.html")
        if maps_of_first is not None:
            attention_maps(maps_of_first.stats["attention_maps"][0], heads, maps_of_first.tokens[0],
                           target / "attention_maps.png")
        console.print(f"wrote {', '.join(str(target / n) for n in names)}")
    run(body)


def method_setting_options(command):
    """Give ``command`` one ``--NAME`` option per setting of the registered methods (help from the registry); the
    values given arrive as text in the command's ``**settings``, for :func:`attnlab.steer.registry.parse_settings`."""
    import inspect

    from attnlab.steer import registry

    by_name: dict[str, list] = {}
    for name, cls in registry.METHODS.items():
        for p in cls.params:
            by_name.setdefault(p.name, []).append((name, p))
    options = []
    for key, owners in by_name.items():
        p = owners[0][1]
        defaults = "; ".join(f"{name}: {'required' if q.required else q.default}" for name, q in owners)
        options.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(
            None, f"--{key.replace('_', '-')}", metavar=p.type.upper(), help=f"{p.help} ({p.range_text() + '; ' if p.range_text() else ''}"
            f"default {defaults})")))
    fixed = [q for q in inspect.signature(command).parameters.values() if q.kind is not q.VAR_KEYWORD]
    command.__signature__ = inspect.signature(command).replace(parameters=fixed + options)
    return command


@app.command()
@method_setting_options
def steer(
    model: str = MODEL_ARGUMENT,
    method: str = typer.Option("pasta", "--method", "-m", help="pasta, act, zerotuning, instaboost, spotlight, "
                               "head-scale or temperature; each takes the settings below marked with its name"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="the prompt; <<…>> marks the text to emphasise"),
    emphasize: list[str] = typer.Option([], "--emphasize", "-e", help="text of the prompt to emphasise (repeatable)"),
    max_new_tokens: int = typer.Option(30),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    chat: Optional[bool] = CHAT_OPTION,
    trust_remote_code: bool = typer.Option(False),
    **settings,
):
    """Generate with and without a steering method, side by side, with the attention change per layer."""
    def body():
        import attnlab
        from attnlab.spans import strip_markers
        from attnlab.steer import registry
        from attnlab.steer.compare import compare
        from rich.table import Table

        values = registry.parse_settings(method, {k: v for k, v in settings.items() if v is not None})
        if not prompt.strip():
            raise AttnlabError("the prompt is empty: give some text (mark the text to emphasise with <<…>>)")
        if max_new_tokens < 1:
            raise AttnlabError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        clean, marked = strip_markers(prompt)
        spans = list(emphasize) or [clean[a:z] for a, z in marked] or None
        meth = registry.build(method, values, spans)
        with console.status(f"loading {model}"):
            mdl, tok = attnlab.load(model, trust_remote_code=trust_remote_code)
        result = compare(mdl, tok, clean, meth, emphasize=spans, max_new_tokens=max_new_tokens,
                         chat=use_chat(chat, tok))
        if as_json:
            print(json.dumps(result, indent=1))
            return
        side = Table(title=f"{result['method']} {result['hyperparameters']}", show_lines=True)
        side.add_column("unsteered")
        side.add_column("steered")
        side.add_row(result["unsteered"], result["steered"])
        console.print(f"[bold]prompt{' (in the chat template)' if result['chat'] else ''}:[/bold] {result['prompt']}")
        console.print(side)
        layers = Table(title=f"attention on the {result['watched']} (mean over heads)")
        for col in ("layer", "unsteered", "steered", "change"):
            layers.add_column(col, justify="right")
        for row in result["attention_by_layer"]:
            layers.add_row(str(row["layer"]), f"{row['unsteered']:.3f}", f"{row['steered']:.3f}",
                           f"{row['steered'] - row['unsteered']:+.3f}")
        console.print(layers)
    run(body)


def parse_setting_items(items: list[str]) -> dict[str, str]:
    """``["alpha=0.05", "heads=L1"]`` -> ``{"alpha": "0.05", "heads": "L1"}`` (values still text)."""
    written = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise AttnlabError(f"cannot read --set {item!r}: write NAME=VALUE, e.g. alpha=0.05")
        written[key.strip()] = value
    return written


def parse_sweep(method: str, sweep: str, select: str | None) -> tuple[str, list]:
    """``alpha=0.001,0.01,0.1`` -> ``("alpha", [0.001, 0.01, 0.1])``, each value checked for ``method``."""
    from attnlab.steer import registry

    key, eq, raw = sweep.partition("=")
    if not eq or not key.strip():
        raise AttnlabError(f"cannot read --sweep {sweep!r}: write NAME=V1,V2,… e.g. alpha=0.001,0.01,0.1")
    param = registry.setting(method, key.strip(), select)
    values = [param.parse(v, method) for v in raw.split(",") if v.strip()]
    if not values:
        raise AttnlabError("--sweep needs at least one value, e.g. alpha=0.001,0.01,0.1")
    return key.strip(), values


@app.command("eval")
def evaluate(
    model: str = MODEL_ARGUMENT,
    task: str = typer.Option("kv", help="kv, needle, override, format, kv-masked, classify, choice, jsonl (and the "
                             "tasks of the README's table)"),
    method: str = typer.Option("pasta", "--method", "-m", help="pasta, act, zerotuning, instaboost, spotlight, "
                               "head-scale, temperature, or none"),
    n: int = typer.Option(300, help="test examples (jsonl: at most this many records)"),
    seed: int = typer.Option(0),
    file: Optional[Path] = typer.Option(None, help="JSONL records for --task jsonl"),
    scorer: str = typer.Option("exact", help="jsonl scorer: exact, loglik, labels, or a reply scorer (line, number, "
                               "json, regex, contains, prefix)"),
    chat: Optional[bool] = CHAT_OPTION,
    pairs: Optional[int] = typer.Option(None, help="kv / kv-masked: pairs per prompt"),
    param: list[str] = typer.Option([], "--set", help="a method setting, NAME=VALUE (see attnlab steer --help for "
                                    "each method's settings; with --select heads, top_k; with --select gamma / m, "
                                    "grid=V1,V2,…); repeatable"),
    span: Optional[str] = typer.Option(None, help="the task span the method acts on (default: emphasis for pasta / "
                                       "spotlight, instruction for instaboost)"),
    select: Optional[str] = typer.Option(None, help="choose this setting on a train split: heads (pasta, act), "
                                         "gamma (zerotuning), m (instaboost)"),
    train_n: int = typer.Option(48, help="train examples for --select (a disjoint split)"),
    budget: Optional[int] = typer.Option(None, help="at most this many heads tried by --select heads"),
    sweep: Optional[str] = typer.Option(None, help="NAME=V1,V2,… one run per value, one curve"),
    out: Optional[str] = typer.Option(None, help="output folder (default: attnlab-out/eval-<time>)"),
    overwrite: bool = typer.Option(False),
    batch_size: int = typer.Option(16, min=1),
    shard_size: Optional[int] = typer.Option(None, min=1, help="run in shards of this many test examples (a "
                                             "multiple of --batch-size), each kept in --out as it finishes: rerun "
                                             "with the same --out to resume (default with --ray: 4 batches)"),
    use_ray: bool = typer.Option(False, "--ray", help="run the shards on a local Ray instance, one model per worker"),
    ray_address: Optional[str] = typer.Option(None, help="run the shards on the Ray cluster at this address"),
    workers: Optional[int] = typer.Option(None, min=1, help="with --ray: number of workers (default 2)"),
    device: str = DEVICE_OPTION,
):
    """Measure a steering method on a task: accuracy unsteered vs steered, paired difference with 95% CI.

    With --shard-size or --ray the test prompts run in shards, resumably, on Ray workers if asked: the report is
    the one a single run gives, number for number, plus the run's workers and shards."""
    def body():
        import attnlab
        from attnlab.commands.eval_dataset import check_sharding, eval_dataset_command
        from attnlab.evals.harness import run as run_eval, use_chat as check_form
        from attnlab.evals.plots import bucket_plot, sweep_plot
        from attnlab.evals.splits import train_and_test
        from attnlab.evals.tasks import TASKS, read_jsonl
        from attnlab.models.config import max_positions
        from attnlab.steer.pasta import save_head_config

        if n < 1:
            raise AttnlabError(f"--n must be >= 1, got {n}")
        for name, value in (("--train-n", train_n), ("--budget", budget), ("--pairs", pairs)):
            if value is not None and value < 1:
                raise AttnlabError(f"{name} must be >= 1, got {value}")
        if task not in TASKS:
            raise AttnlabError(f"unknown task '{task}': choose from {', '.join(TASKS)}")
        if pairs is not None and task not in ("kv", "kv-masked"):
            raise AttnlabError(f"--pairs is for --task kv and kv-masked, not {task}")
        if (file is not None) != (task == "jsonl"):
            raise AttnlabError("--file goes with --task jsonl" if file is not None else "--task jsonl needs --file "
                               "PATH to a JSONL file of {prompt, answer} records")
        sharded, ray_workers, shards = check_sharding(use_ray, ray_address, workers, shard_size, sweep, batch_size)
        if task == "jsonl":             # sharded: a malformed record is skipped and counted, not refused
            read_jsonl(str(file), scorer, [] if sharded else None)
        specs = method_specs(method, param, select, span, sweep)
        names = ["eval.json", "eval.png"] + (["sweep.png", "sweep.json"] if sweep else []) + \
            (["heads.json"] if select == "heads" else [])
        target = output_dir(out, "eval", [] if sharded else names, overwrite)   # a sharded job resumes its --out
        with console.status(f"loading {model}"):
            m, tok = attnlab.load(model, device=device)
        form = use_chat(chat, tok)
        task_params = {"chat": form} if pairs is None else {"pairs": pairs, "chat": form}
        if task == "jsonl":
            task_params.update(path=str(file), scorer=scorer, **({"skip_bad": True} if sharded else {}))
        train, test = train_and_test(task, tok, n, seed, max_positions(m), train_n if select else None, **task_params)
        check_form(tok, test, form)
        results = []
        for value, spec in specs:
            if sharded:                 # specs holds one spec: --sweep is refused with shards
                results.append((None, eval_dataset_command(
                    model, m, tok, test, spec, target, train=train, budget=budget, seed=seed, batch_size=batch_size,
                    chat=form, shard_size=shards, workers=ray_workers, ray_address=ray_address, device=device,
                    label=f"{task} · {method}")))
                continue
            with progress_bar() as bar:
                job = bar.add_task(f"{task} · {method}" + (f" {sweep.partition('=')[0]}={value}" if sweep else ""),
                                   total=None)
                results.append((value, run_eval(m, tok, test, spec, train=train, budget=budget, seed=seed,
                                                batch_size=batch_size, on_step=lambda k: bar.advance(job, k),
                                                chat=form)))
        write_folder(target)
        (target / "eval.json").write_text(json.dumps(results[-1][1] if sweep is None else
                                                     [{"value": v, **r} for v, r in results], indent=1))
        bucket_plot(results[-1][1], target / "eval.png")
        if select == "heads":           # PASTA's head-config JSON: reuse with --set heads=<out>/heads.json
            shape = attnlab.ModelShape.of(m)
            chosen = attnlab.HeadSet.parse(results[-1][1]["selection"]["heads"], shape.n_layers, shape.n_heads)
            save_head_config(chosen, target / "heads.json", overwrite=True)
        if sweep:
            sweep_plot(results, sweep.partition("=")[0], target / "sweep.png")
            (target / "sweep.json").write_text(json.dumps([{"value": v, "steered": r["steered"], "paired": r["paired"]}
                                                           for v, r in results], indent=1))
        print_eval(results)
        console.print(f"wrote {', '.join(str(target / n_) for n_ in names)}")
    run(body)


def method_specs(method: str, items: list[str], select: str | None, span: str | None, sweep: str | None) -> list:
    """``[(sweep value or None, MethodSpec or None)]`` for ``eval``, every setting checked against the registry."""
    if method == "none":
        given = [flag for flag, value in (("--set", items), ("--select", select), ("--span", span), ("--sweep", sweep))
                 if value]
        if given:
            raise AttnlabError(f"{given[0]} needs a method: pass --method")
        return [(None, None)]
    from attnlab.evals.harness import MethodSpec
    from attnlab.steer import registry

    registry.check_select(method, select)
    values = registry.parse_settings(method, parse_setting_items(items), select)
    if sweep is None:
        return [(None, MethodSpec(method, values, select, span))]
    key, swept = parse_sweep(method, sweep, select)
    return [(v, MethodSpec(method, {**values, key: v}, select, span)) for v in swept]


def print_eval(results) -> None:
    from rich.table import Table

    table = Table(title="unsteered vs steered (paired, 95% bootstrap CI)")
    for col in ("setting", "task", "method", "n", "unsteered", "steered", "difference [95% CI]", "McNemar p"):
        table.add_column(col, justify="right")
    for value, r in results:
        p = r["paired"]
        table.add_row("-" if value is None else str(value), r["task"]["name"],
                      r["method"]["name"] if r["method"] else "none", str(r["n"]),
                      f"{r['unsteered']['accuracy']:.3f}", f"{r['steered']['accuracy']:.3f}",
                      f"{p['difference']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]",
                      f"{r['mcnemar']['p_value']:.3g}")
    console.print(table)
    last = results[-1][1]
    if last.get("secondary"):
        secondary = Table(title=f"secondary metrics (primary: {last['metric']})")
        for col in ("metric", "unsteered", "steered", "difference [95% CI]"):
            secondary.add_column(col, justify="right")
        for name, m in last["secondary"].items():
            secondary.add_row(name, f"{m['unsteered']:.3f}", f"{m['steered']:.3f}",
                              f"{m['difference']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]")
        console.print(secondary)
    if last.get("unparsed") is not None:
        console.print(f"replies that could not be read: {last['unparsed']['unsteered']} unsteered, "
                      f"{last['unparsed']['steered']} steered (of {last['n']})")
    if len(last["buckets"]) > 1:
        buckets = Table(title="per bucket")
        for col in ("bucket", "n", "unsteered", "steered", "difference [95% CI]"):
            buckets.add_column(col, justify="right")
        for name, b in last["buckets"].items():
            buckets.add_row(name, str(b["n"]), f"{b['unsteered']:.3f}", f"{b['steered']:.3f}",
                            f"{b['difference']:+.3f} [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}]")
        console.print(buckets)
    if last.get("selection"):
        chosen = {k: v for k, v in last["selection"].items() if k not in ("grid", "options")}
        console.print(f"selected on the train split: {chosen}")


@app.command()
def prepare(models: list[str] = typer.Argument(None, help="GGUF aliases (smollm2, gemma3), .gguf files or folders "
                                                 "holding one; default: smollm2 gemma3")):
    """Convert GGUF models once to safetensors folders in attnlab's cache, so later loads take seconds.

    The cache is $ATTNLAB_CACHE, else $XDG_CACHE_HOME/attnlab, else ~/.cache/attnlab; each folder is keyed by
    the GGUF's sha256, which every report records as the model's revision.
    """
    def body():
        from attnlab.models import gguf
        from attnlab.models.loading import resolve

        for name in models or list(gguf.GGUF_ALIASES):
            source, kind = resolve(name)
            if kind != "gguf":
                raise AttnlabError(f"'{name}' is not a GGUF model (an alias smollm2 / gemma3, a .gguf file or a folder "
                                   "holding one): other models need no preparation")
            start = time.perf_counter()
            folder, sha = gguf.prepare(source)
            if folder is None:
                raise AttnlabError(f"the cache {gguf.cache_root()} is not writable: set ATTNLAB_CACHE to a writable "
                                   "folder")
            console.print(f"{name}: {folder} (revision gguf-sha256:{sha[:16]}…, {time.perf_counter() - start:.1f} s)")
    run(body)


@app.command()
def schema():
    """Print the JSON schema of the profile report."""
    from attnlab.report.schema import Report
    console.print_json(json.dumps(Report.model_json_schema()))


STREAM_FILES = ["stream.json", "stream.png"]


@app.command()
def stream(
    model: str = MODEL_ARGUMENT,
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="a UTF-8 text to stream, repeated as needed "
                                        "(default: the bundled haystack + sample text)"),
    policy: str = typer.Option("sink", help="the cache policy to measure: sink, window, h2o, tova or snapkv"),
    sinks: int = typer.Option(4, help="attention-sink tokens the cache keeps"),
    window: int = typer.Option(256, help="other tokens the cache keeps; the cache holds sinks + window"),
    tokens: int = typer.Option(2000, help="tokens to stream (SmolLM2 on 2 CPU cores: about 10 per second per mode)"),
    modes: str = typer.Option("dense,window,recompute,policy", help="comma list of dense, window, recompute, sink, "
                              "h2o, tova, snapkv; 'policy' is --policy"),
    recompute_every: int = typer.Option(25, help="recompute: one fresh forward every this many tokens"),
    dense_tokens: Optional[int] = typer.Option(None, help="dense stops here (default: twice the model's positions)"),
    out: Optional[str] = typer.Option(None, help="output folder (default: attnlab-out/stream-<time>)"),
    overwrite: bool = typer.Option(False, help="replace stream.json / stream.png already in --out"),
    threads: int = typer.Option(1, help="torch threads (token-by-token decoding gains little from more)"),
    dtype: Optional[str] = DTYPE_OPTION,
    device: str = DEVICE_OPTION,
    trust_remote_code: bool = typer.Option(False, help="run the model repo's own code (only for code you trust)"),
):
    """Streaming perplexity: dense vs window vs sliding window with recompute vs a sink cache policy.

    Writes stream.json (every number, and the command) and stream.png (running perplexity) to --out.
    """
    def body():
        import attnlab
        from attnlab.cache.evaluate import check_settings, resolve_modes, stream_ids, stream_perplexity
        from attnlab.cache.plots import stream_plot

        set_threads(threads)
        text = read_text_file(file) if file is not None else None
        chosen = resolve_modes([m.strip() for m in modes.split(",") if m.strip()], policy)
        if recompute_every < 1:
            raise AttnlabError(f"--recompute-every must be >= 1, got {recompute_every}")
        if dense_tokens is not None and dense_tokens < 1:
            raise AttnlabError(f"--dense-tokens must be >= 1, got {dense_tokens}")
        target = output_dir(out, "stream", STREAM_FILES, overwrite)
        with console.status(f"loading {model}"):
            m, tok = attnlab.load(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        check_settings(m, sinks, window, chosen)
        ids = stream_ids(tok, tokens, text)
        with progress_bar() as bar:
            jobs = {}

            def advance(mode, done, total):
                if mode not in jobs:
                    jobs[mode] = bar.add_task(mode, total=total)
                bar.update(jobs[mode], completed=done)

            report = stream_perplexity(m, ids, modes=chosen, num_sink=sinks, window=window, policy=policy,
                                       dense_tokens=dense_tokens, recompute_every=recompute_every,
                                       on_progress=advance)
        report["model"] = model
        report["file"] = str(file) if file is not None else "bundled haystack.txt + sample.txt"
        report["command"] = (f"attnlab stream {model}" + (f" --file {file}" if file is not None else "") +
                             f" --policy {policy} --sinks {sinks} --window {window} --tokens {tokens} "
                             f"--modes {','.join(chosen)} --recompute-every {recompute_every}" +
                             (f" --dense-tokens {dense_tokens}" if dense_tokens else "") +
                             (f" --dtype {dtype}" if dtype else "") + (f" --device {device}" if device != "cpu" else ""))
        print_stream(report)
        write_folder(target)
        stream_plot(report, target / "stream.png")
        (target / "stream.json").write_text(json.dumps(report, indent=1))
        console.print(f"wrote {', '.join(str(target / n) for n in STREAM_FILES)}")
    run(body)


def set_threads(threads: int) -> None:
    """``torch.set_num_threads`` with a one-line error for a bad count."""
    import torch

    if threads < 1:
        raise AttnlabError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def print_stream(report: dict) -> None:
    """The tables of ``attnlab stream``: perplexity per segment, then speed and memory per mode, then ratios."""
    import math

    from rich.table import Table

    from attnlab.report.units import fmt_bytes

    modes = list(report["modes"])
    segs = Table(title=f"streaming perplexity - {report['model']}, {report['tokens']} tokens, cache "
                       f"{report['num_sink']}+{report['window']} (window mode 0+{report['cache_size']}), "
                       f"model positions {report['model_positions']}")
    segs.add_column("tokens", justify="right")
    for mode in modes:
        segs.add_column(mode, justify="right")
    for i, seg in enumerate(report["segments"][modes[0]]):
        cells = [report["segments"][mode][i]["ppl"] for mode in modes]
        segs.add_row(f"{seg['start']}-{seg['stop']}", *("-" if c is None else f"{c:.2f}" for c in cells))
    console.print(segs)
    summary = Table(title="per mode (n: positions evaluated; ppl@rc: on the recompute positions; cache at the "
                          "end; peak RSS growth)")
    for col in ("mode", "n", "ppl", "ppl@rc", "tok/s", "cache", "peak RSS"):
        summary.add_column(col, justify="right")
    for mode, e in report["modes"].items():
        rc = e.get("nll_on_recompute_positions")
        cache = "-" if e["cache_bytes_end"] is None else f"{e['cache_tokens_end']}t {fmt_bytes(e['cache_bytes_end'])}"
        summary.add_row(mode, str(e["evaluated"]), f"{e['ppl']:.2f}", "-" if rc is None else f"{math.exp(rc):.2f}",
                        f"{e['tokens_per_s']:.1f}", cache, fmt_bytes(e["peak_rss_bytes"]))
    console.print(summary)
    for key, value in report["ratios"].items():
        console.print(f"  {key}: {value:.2f}")


@app.command()
def generate(
    model: str = MODEL_ARGUMENT,
    prompt: str = typer.Option(..., "--prompt", "-p", help="the text to continue"),
    stream_cache: bool = typer.Option(False, "--stream", help="generate through a sink cache (StreamingLLM): "
                                      "memory stays bounded, past the model's positions"),
    max_new_tokens: int = typer.Option(100, help="tokens to generate (Ctrl-C stops early)"),
    sinks: int = typer.Option(4, help="--stream: attention-sink tokens the cache keeps"),
    window: int = typer.Option(256, help="--stream: other tokens the cache keeps"),
    sample: bool = typer.Option(False, help="sample instead of greedy decoding"),
    temperature: float = typer.Option(1.0, help="sampling temperature"),
    seed: int = typer.Option(0, help="sampling seed"),
    ignore_eos: bool = typer.Option(False, help="go on past the end-of-text token"),
    chat: Optional[bool] = CHAT_OPTION,
    threads: int = typer.Option(1, help="torch threads (token-by-token decoding gains little from more)"),
    dtype: Optional[str] = DTYPE_OPTION,
    device: str = DEVICE_OPTION,
    trust_remote_code: bool = typer.Option(False, help="run the model repo's own code (only for code you trust)"),
):
    """Generate text, printed as it comes; with --stream through a bounded sink cache, as long as you like."""
    def body():
        import torch
        from transformers import TextStreamer

        import attnlab
        from attnlab.cache import SinkCache
        from attnlab.cache.evaluate import cache_bytes, check_settings
        from attnlab.models.config import max_positions
        from attnlab.report.units import fmt_bytes
        from attnlab.spans import chat_wrap

        set_threads(threads)
        if max_new_tokens < 1:
            raise AttnlabError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        if sample and not temperature > 0:
            raise AttnlabError(f"--temperature must be > 0, got {temperature}")
        if not prompt.strip():
            raise AttnlabError("the prompt is empty: give some text to continue")
        with console.status(f"loading {model}"):
            m, tok = attnlab.load(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        if not m.can_generate():
            raise AttnlabError(encoder_refusal(model, m, "generate"))
        text = chat_wrap(tok, prompt)[0] if use_chat(chat, tok) else prompt
        ids = tok(text, return_tensors="pt", add_special_tokens=text is prompt).input_ids.to(m.device)
        limit = max_positions(m)
        cache = None
        if stream_cache:
            check_settings(m, sinks, window, ["sink"])
            cache = SinkCache(m, num_sink=sinks, window=window)
        elif limit is not None and ids.shape[1] + max_new_tokens > limit:
            raise AttnlabError(f"prompt ({ids.shape[1]} tokens) + --max-new-tokens {max_new_tokens} exceed the model's "
                               f"{limit} positions: use --stream to generate past them with a bounded cache")
        torch.manual_seed(seed)
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=tok.pad_token_id,
                      streamer=TextStreamer(tok, skip_prompt=True))
        if sample:
            kwargs["temperature"] = temperature
        if ignore_eos:
            kwargs["min_new_tokens"] = max_new_tokens
        console.print(f"[bold]{prompt}[/bold]", end="")
        start, new = time.perf_counter(), 0
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        if cache is not None:
            hf_logging.set_verbosity_error()      # its "exceeded the maximum length" notice does not apply to a sink cache
        try:
            with torch.no_grad():
                out = m.generate(ids, past_key_values=cache, **kwargs)
            new = out.shape[1] - ids.shape[1]
        except KeyboardInterrupt:
            console.print("\n[yellow]stopped[/yellow]")
            new = cache.layers[0].seen - ids.shape[1] if cache is not None else 0
        finally:
            hf_logging.set_verbosity(level)
        seconds = time.perf_counter() - start
        speed = f", {new / seconds:.1f} tokens/s" if new and seconds > 0 else ""
        if cache is not None:
            console.print(f"\n{new} new tokens{speed}; cache: {cache.get_seq_length()} of {sinks}+{window} tokens "
                          f"per layer ({fmt_bytes(cache_bytes(cache))}), {cache.layers[0].evictions} evictions")
        else:
            console.print(f"\n{new} new tokens{speed}")
    run(body)


# Commands that live in their own modules register themselves on ``app`` when imported.
from attnlab.commands import flow, heads, lookback, serve  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
