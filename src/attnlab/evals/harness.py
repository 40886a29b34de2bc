"""The evaluation harness: unsteered vs steered on the same prompts, with paired statistics.

``run(model, tokenizer, task, method)`` scores every example twice (the method off, then on), reports
both accuracies, the paired difference with a 95% bootstrap CI and an exact McNemar test, per bucket
too. Methods whose settings are chosen from data (PASTA's heads, ZeroTuning's gamma, InstABoost's M)
are chosen here on a *separate* train task (another seed, or the first part of a JSONL file), never on
the test prompts.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from attnlab.errors import AttnlabError
from attnlab.evals.stats import mcnemar_exact, paired_bootstrap
from attnlab.evals.tasks import Task
from attnlab.spans import head_name
from attnlab.steer import registry

@dataclass(frozen=True)
class MethodSpec:
    """A registered method by name with its settings; ``select`` names the one chosen from train data.

    ``params`` may also hold the options of that choice (``top_k`` for PASTA's heads, ``grid`` for
    ZeroTuning's gamma or InstABoost's M); every key and value is checked against the registry here.
    """

    name: str
    params: dict = field(default_factory=dict)
    select: str | None = None
    span: str | None = None

    def __post_init__(self):
        cls = registry.method_class(self.name)
        object.__setattr__(self, "params", registry.check_settings(self.name, self.params, self.select))
        if self.span is not None and cls.span is None:
            raise AttnlabError(f"{self.name} acts on no span: leave out the span ('{self.span}')")

    @property
    def span_name(self) -> str | None:
        """The task span the method acts on: ``span`` if given, else the method's own."""
        return self.span or registry.method_class(self.name).span

    @property
    def method_params(self) -> dict:
        """The settings the method is built with (the options of a choice from data left out)."""
        return registry.split_settings(self.name, self.params)[0]

    @property
    def options(self) -> dict:
        """The options of choosing ``select`` from data, declared defaults filled in."""
        return registry.choice_options(self.name, self.select, self.params) if self.select else {}

    def with_params(self, **params) -> "MethodSpec":
        """This method with ``params`` set, nothing left to choose."""
        return MethodSpec(self.name, {**self.method_params, **params}, span=self.span)

    def build(self, spans_of):
        """The method for one batch; ``spans_of(name)`` gives that batch's per-prompt span lists."""
        span = self.span_name
        return registry.build(self.name, self.method_params, spans_of(span) if span else None)


def _pieces(example, name):
    if name not in example.spans:
        raise AttnlabError(f"the method needs the span '{name}', which this task does not provide "
                           f"(it has: {', '.join(example.spans) or 'none'})")
    value = example.spans[name]
    return value if isinstance(value, list) else [value]


def _steer_factory(model, tokenizer, examples, spec: MethodSpec | None):
    from attnlab.steer.session import steer

    if spec is None:
        return None

    def make(idx):
        method = spec.build(lambda name: [_pieces(examples[i], name) for i in idx])
        return steer(model, method, tokenizer=tokenizer)
    return make


def score_task(model, tokenizer, task: Task, spec: MethodSpec | None, batch_size: int = 16,
               on_step=None) -> torch.Tensor:
    """Per example 1.0 / 0.0: is the (steered) model right?"""
    from attnlab.scoring import score_answers
    from attnlab.steer.selection import generate_texts

    exs = task.examples
    if task.encoder:
        return _score_masked(model, tokenizer, task, spec, batch_size, on_step)
    make = _steer_factory(model, tokenizer, exs, spec)
    if task.scorer in ("exact", "loglik"):
        prompts = [e.prompt for e in exs]
        best = None
        for k in range(max(len(e.answers) for e in exs)):
            answers = [e.answers[min(k, len(e.answers) - 1)] for e in exs]
            s = score_answers(model, tokenizer, prompts, answers, steer=make, batch_size=batch_size)
            if task.scorer == "exact":
                best = s.correct if best is None else best | s.correct
            else:
                best = s.logprob if best is None else torch.maximum(best, s.logprob)
        if task.scorer == "exact":
            result = best.float()
        else:
            worst = None
            for k in range(max(len(e.wrong) for e in exs)):
                wrong = [e.wrong[min(k, len(e.wrong) - 1)] for e in exs]
                lp = score_answers(model, tokenizer, prompts, wrong, steer=make, batch_size=batch_size).logprob
                worst = lp if worst is None else torch.maximum(worst, lp)
            result = (best > worst).float()
        if on_step:
            on_step(len(exs))
        return result
    out = []
    for s in range(0, len(exs), batch_size):
        idx = list(range(s, min(len(exs), s + batch_size)))
        method = spec.build(lambda name: [_pieces(exs[i], name) for i in idx]) if spec else None
        longest = max(len(tokenizer(a)["input_ids"]) for i in idx for a in exs[i].answers)
        texts = generate_texts(model, tokenizer, [exs[i].prompt for i in idx], method, longest + 8)
        for i, text in zip(idx, texts):
            ok = any(text.strip().startswith(a.strip()) if task.scorer == "prefix" else a.strip() in text
                     for a in exs[i].answers)
            out.append(float(ok))
        if on_step:
            on_step(len(idx))
    return torch.tensor(out)


@torch.no_grad()
def _score_masked(model, tokenizer, task, spec, batch_size, on_step) -> torch.Tensor:
    """Encoders: the token predicted at ``[MASK]`` by the tied input embeddings (no MLM head needed)."""
    from attnlab.spans import Spans
    from attnlab.steer.session import steer

    exs = task.examples
    emb = model.get_input_embeddings().weight
    out = []
    for s in range(0, len(exs), batch_size):
        idx = list(range(s, min(len(exs), s + batch_size)))
        span = spec.span_name if spec else None
        inputs = Spans.encode(tokenizer, [exs[i].prompt for i in idx],
                              {span: [_pieces(exs[i], span) for i in idx]} if span else None)
        method = spec.build(lambda name: inputs) if spec else None
        if method is not None:
            with steer(model, method, tokenizer=tokenizer):
                hidden = model(**inputs).last_hidden_state
        else:
            hidden = model(**inputs).last_hidden_state
        at_mask = inputs["input_ids"] == tokenizer.mask_token_id
        predicted = (hidden[at_mask] @ emb.T).argmax(-1)
        for pred, i in zip(predicted.tolist(), idx):
            target = tokenizer(exs[i].answers[0].strip(), add_special_tokens=False)["input_ids"][0]
            out.append(float(pred == target))
        if on_step:
            on_step(len(idx))
    return torch.tensor(out)


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def select_settings(model, tokenizer, spec: MethodSpec, train: Task, budget: int | None, on_step=None) -> dict:
    """Choose ``spec.select`` on the train task (never the test prompts); returns the chosen value and details."""
    from attnlab.steer import selection

    examples = [selection.Example(e.prompt, e.answers[0], {k: (v if isinstance(v, str) else v[0])
                                                             for k, v in e.spans.items()}) for e in train.examples]
    metric = "accuracy" if train.scorer == "exact" else "logprob"
    options = spec.options
    if spec.select == "heads":
        ranked = selection.rank_heads(model, tokenizer, examples, lambda spans, heads: spec.with_params(heads=heads)
                                      .build(spans), metric="logprob", budget=budget, on_step=on_step)
        gaining = [h for gain, h in ranked if gain > 0][:options.get("top_k")] or [ranked[0][1]]
        return {"heads": gaining, "ranking": [(round(g, 4), head_name(l, h)) for g, (l, h) in ranked[:10]]}
    if spec.select == "gamma":
        best, results = selection.choose_value(model, tokenizer, examples, lambda spans, g: spec.with_params(gamma=g)
                                               .build(spans), list(options["grid"]), metric=metric, on_step=on_step)
        return {"gamma": best, "grid": results}
    if spec.span_name != "instruction":
        examples = [selection.Example(e.prompt, e.answer, {**e.spans, "instruction": e.spans[spec.span_name]})
                    for e in examples]
    best, results = selection.choose_instaboost_m(model, tokenizer, examples, list(options["grid"]), metric=metric,
                                                  on_step=on_step)
    return {"m": best, "grid": results}


def run(model, tokenizer, task: Task, spec: MethodSpec | None, *, train: Task | None = None,
        budget: int | None = None, seed: int = 0, batch_size: int = 16, on_step=None) -> dict:
    """Evaluate ``spec`` on ``task``: accuracies, paired difference with CI, McNemar, buckets, provenance."""
    from attnlab import __version__
    from attnlab.profile import model_info

    started = time.time()
    selected = None
    if spec is not None and spec.select:
        if train is None:
            raise AttnlabError(f"choosing {spec.select} from data needs a train split")
        selected = {**select_settings(model, tokenizer, spec, train, budget, on_step), "options": spec.options}
        spec = spec.with_params(**{spec.select: selected[spec.select]})
    if spec is not None and spec.span_name:
        _pieces(task.examples[0], spec.span_name)
    unsteered = score_task(model, tokenizer, task, None, batch_size, on_step)
    steered = score_task(model, tokenizer, task, spec, batch_size, on_step) if spec else unsteered
    buckets = {}
    for name in dict.fromkeys(e.bucket for e in task.examples):
        idx = [i for i, e in enumerate(task.examples) if e.bucket == name]
        u, s = unsteered[idx], steered[idx]
        buckets[name] = {"n": len(idx), "unsteered": float(u.mean()), "steered": float(s.mean()),
                         **paired_bootstrap(u.numpy(), s.numpy(), seed=seed)}
    n = len(task.examples)
    return {
        "attnlab_version": __version__, "model": model_info(model).model_dump(),
        "task": {"name": task.name, "scorer": task.scorer, **task.params},
        "method": None if spec is None else {"name": spec.name, "span": spec.span_name, "params": {
            k: (_heads_label(v) if k == "heads" else v) for k, v in spec.params.items()}},
        "selection": None if selected is None else {"on": {"task": train.name, **train.params}, **{
            k: (_heads_label(v) if k == "heads" else v) for k, v in selected.items()}},
        "n": n, "seed": seed,
        "unsteered": {"accuracy": float(unsteered.mean()), "ci95": wilson(float(unsteered.sum()), n)},
        "steered": {"accuracy": float(steered.mean()), "ci95": wilson(float(steered.sum()), n)},
        "paired": paired_bootstrap(unsteered.numpy(), steered.numpy(), seed=seed),
        "mcnemar": mcnemar_exact(unsteered.numpy(), steered.numpy()),
        "buckets": buckets, "seconds": round(time.time() - started, 1),
        "per_example": {"unsteered": unsteered.int().tolist(), "steered": steered.int().tolist()},
    }


def _heads_label(heads) -> str:
    """Heads as the command line writes them (``L3H5,L3H0``), whether given as text or as (layer, head) pairs."""
    if isinstance(heads, (list, tuple)) and all(isinstance(h, (list, tuple)) for h in heads):
        return ",".join(head_name(layer, head) for layer, head in heads)
    return str(heads)
