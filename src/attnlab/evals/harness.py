"""The evaluation harness: unsteered vs steered on the same prompts, with paired statistics.

``run(model, tokenizer, task, method)`` scores every example twice (the method off, then on), reports
both accuracies, the paired difference with a 95% bootstrap CI and an exact McNemar test, per bucket
too. Methods whose settings are chosen from data (PASTA's heads, ZeroTuning's gamma, InstABoost's M)
are chosen here on a *separate* train task (another seed, or the first part of a JSONL file), never on
the test prompts.

Prompts are the user's message. With a chat template (``chat``, on by default when the tokenizer has one)
each becomes one user turn and the answer follows the assistant turn's opening; spans stay pieces of the
user's text, placed inside the rendered prompt. A task is scored by teacher forcing (``exact``, ``loglik``,
``labels`` -- label-word scoring over a fixed label set, as ZeroTuning and ACT evaluate zero-shot
classification and multiple choice) or from a greedy reply read by a scorer of :mod:`attnlab.evals.scorers`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from attnlab.errors import AttnlabError
from attnlab.evals.scorers import REPLY_SCORERS, TEACHER_FORCED, get_reply_scorer
from attnlab.evals.stats import mcnemar_exact, paired_bootstrap
from attnlab.evals.tasks import EvalExample, Task
from attnlab.spans import added_special_tokens, chat_wrap, has_chat_template, head_name, shorten
from attnlab.steer import registry

DEFAULT_REPLY_TOKENS = 32   # greedy reply length when the task does not set max_new_tokens

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


def use_chat(tokenizer, task: Task, chat: bool | None) -> bool:
    """The form ``task`` is asked in: ``chat`` as given, else the chat template when the tokenizer has one.

    A task written for one form (``Task.chat`` True or False) is refused in the other in one line.
    """
    form = has_chat_template(tokenizer) if chat is None else chat
    if form and not has_chat_template(tokenizer):
        raise AttnlabError("--chat: this model's tokenizer has no chat template; prompt it with plain text (--no-chat)")
    if asked_as_chat(task) and not form:
        raise AttnlabError(f"task '{task.name}' is asked as a chat turn and its replies cannot be scored as plain "
                           "text: " + ("use a model with a chat template (e.g. smollm2)" if chat is None else
                                       "leave out --no-chat"))
    if task.chat is False and form:
        raise AttnlabError(f"task '{task.name}' was written as plain text (the format the bundled tiny model was "
                           "trained on): evaluate it with --no-chat, or make it with chat=True")
    return form


def asked_as_chat(task: Task) -> bool:
    """Whether ``task`` can only be asked as a chat turn: written so (``Task.chat``), or, left open, a generated
    task scored from a free reply (the user's own ``jsonl`` records are scored in whichever form is asked)."""
    if task.chat is not None:
        return task.chat
    return task.scorer in REPLY_SCORERS and task.name != "jsonl" and not task.encoder


def render(tokenizer, examples: list[EvalExample], chat: bool, scorer: str) -> list[EvalExample]:
    """``examples`` as the model sees them: prompts in the chat template if ``chat``, every span piece a character
    range of the rendered prompt (so it can only land on the user's text), answers as their continuation.

    In chat form the answer follows the assistant turn's opening, so teacher-forced answers lose their leading
    spaces; in plain form a label is scored as a word after the prompt (``" sports"``). A span that is not in its
    example's prompt is refused in one line naming the example.
    """
    out = []
    for number, e in enumerate(examples, 1):
        prompt, at = chat_prompt(tokenizer, e.prompt) if chat else (e.prompt, 0)
        spans = {}
        for name, value in e.spans.items():
            ranges = []
            for piece in value if isinstance(value, list) else [value]:
                if isinstance(piece, tuple):
                    ranges.append((piece[0] + at, piece[1] + at))
                    continue
                start = e.prompt.find(piece) if isinstance(piece, str) and piece else -1
                if start < 0:
                    raise AttnlabError(f"example {number} ('{shorten(e.prompt, 40)}'): its '{name}' span "
                                       f"'{shorten(str(piece), 40)}' is not in the prompt: give a piece of it exactly "
                                       "as written")
                ranges.append((start + at, start + at + len(piece)))
            spans[name] = ranges
        answers = [a.lstrip() for a in e.answers] if chat and scorer in ("exact", "loglik") else e.answers
        wrong = [w.lstrip() for w in e.wrong] if chat else e.wrong
        meta = dict(e.meta)
        if scorer == "labels":
            meta["continuations"] = [label if chat else f" {label}" for label in _labels(e, number)]
        out.append(EvalExample(prompt, answers, spans, e.bucket, wrong, meta))
    return out


def chat_prompt(tokenizer, text: str) -> tuple[str, int]:
    """``text`` as one user turn of the chat template (:func:`attnlab.spans.chat_wrap`) and where it sits in it,
    less a leading special token that the tokenizer adds by itself (Gemma's ``<bos>``), so it is not doubled."""
    wrapped, at = chat_wrap(tokenizer, text)
    before, _ = added_special_tokens(tokenizer)
    lead = tokenizer.decode(before) if before else ""
    if lead and wrapped.startswith(lead):
        return wrapped[len(lead):], at - len(lead)
    return wrapped, at


def _labels(example: EvalExample, number: int) -> list[str]:
    labels = example.meta.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x.strip() for x in labels):
        raise AttnlabError(f"example {number}: the labels scorer needs meta['labels'], two or more label words")
    if example.answers[0] not in labels:
        raise AttnlabError(f"example {number}: its answer '{example.answers[0]}' is not one of its labels "
                           f"({', '.join(labels)})")
    return labels


def _steer_factory(model, tokenizer, examples, spec: MethodSpec | None):
    from attnlab.steer.session import steer

    if spec is None:
        return None

    def make(idx):
        method = spec.build(lambda name: [_pieces(examples[i], name) for i in idx])
        return steer(model, method, tokenizer=tokenizer)
    return make


def score_task(model, tokenizer, task: Task, spec: MethodSpec | None, batch_size: int = 16, on_step=None,
               chat: bool | None = None) -> dict[str, torch.Tensor]:
    """Per example 1.0 / 0.0 for each metric of the task's scorer, the primary metric first.

    ``chat`` (default: on when the tokenizer has a chat template) renders every prompt as a user turn. Scorers:
    ``exact`` (greedy decoding gives an answer), ``loglik`` (an answer more likely than every ``wrong`` one),
    ``labels`` (the gold label the most likely of ``meta["labels"]``), or a reply scorer of
    :mod:`attnlab.evals.scorers` applied to a greedy reply of ``Task.params["max_new_tokens"]`` tokens.
    """
    if task.encoder:
        return {"correct": _score_masked(model, tokenizer, task, spec, batch_size, on_step)}
    form = use_chat(tokenizer, task, chat)
    exs = render(tokenizer, task.examples, form, task.scorer)
    if task.scorer in TEACHER_FORCED:
        result = _teacher_forced(model, tokenizer, task.scorer, exs, _steer_factory(model, tokenizer, exs, spec),
                                 batch_size)
        if on_step:
            on_step(len(exs))
        return {"correct": result}
    return _replies(model, tokenizer, task, exs, spec, batch_size, on_step)


def _teacher_forced(model, tokenizer, scorer: str, exs: list[EvalExample], make, batch_size: int) -> torch.Tensor:
    """``exact``, ``loglik`` or ``labels`` for every example, from one teacher-forced pass per alternative."""
    from attnlab.scoring import score_answers

    prompts = [e.prompt for e in exs]

    def best_of(options):
        """Per example, the best log-likelihood (and any greedy hit) over its ``options`` lists."""
        best, hit = torch.full((len(exs),), -math.inf), torch.zeros(len(exs), dtype=torch.bool)
        for k in range(max(len(o) for o in options)):
            s = score_answers(model, tokenizer, prompts, [o[min(k, len(o) - 1)] for o in options], steer=make,
                              batch_size=batch_size)
            present = torch.tensor([k < len(o) for o in options])
            best = torch.where(present, torch.maximum(best, s.logprob), best)
            hit |= present & s.correct
        return best, hit

    if scorer == "exact":
        return best_of([e.answers for e in exs])[1].float()
    if scorer == "loglik":
        if not all(e.wrong for e in exs):
            raise AttnlabError("the loglik scorer needs 'wrong' alternatives on every example")
        return (best_of([e.answers for e in exs])[0] > best_of([e.wrong for e in exs])[0]).float()
    gold = [_gold(e, scorer) for e in exs]
    gold_lp = best_of([[g] for g in gold])[0]
    others = [[c for c in e.meta["continuations"] if c != g] for e, g in zip(exs, gold)]
    return (gold_lp > best_of(others)[0]).float()


def _replies(model, tokenizer, task: Task, exs: list[EvalExample], spec, batch_size: int,
             on_step) -> dict[str, torch.Tensor]:
    """Generate a greedy reply per example and score it with the task's reply scorer."""
    rows = _reply_rows(model, tokenizer, task, exs, spec, batch_size, on_step)[1]
    return {key: torch.tensor([row.get(key, 0.0) for row in rows], dtype=torch.float) for key in rows[0]}


def _reply_rows(model, tokenizer, task: Task, exs: list[EvalExample], spec, batch_size: int,
                on_step) -> tuple[list[str], list[dict[str, float]]]:
    """The greedy replies to the rendered examples ``exs`` (steered by ``spec``) and each reply's scorer row."""
    from attnlab.steer.selection import generate_texts

    scorer = get_reply_scorer(task.scorer)
    longest = max((len(tokenizer(a, add_special_tokens=False)["input_ids"]) for e in exs for a in e.answers),
                  default=0)                                     # constraint tasks (ifeval) have no answer text
    max_new = task.params.get("max_new_tokens", max(DEFAULT_REPLY_TOKENS, longest + 8))
    replies, rows = [], []
    for s in range(0, len(exs), batch_size):
        idx = list(range(s, min(len(exs), s + batch_size)))
        method = spec.build(lambda name: [_pieces(exs[i], name) for i in idx]) if spec else None
        replies += generate_texts(model, tokenizer, [exs[i].prompt for i in idx], method, max_new)
        rows += [scorer.score(reply, exs[i]) for i, reply in zip(idx, replies[s:])]
        if on_step:
            on_step(len(idx))
    return replies, rows


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


def select_settings(model, tokenizer, spec: MethodSpec, train: Task, budget: int | None, on_step=None,
                    chat: bool | None = None, batch_size: int = 16) -> dict:
    """Choose ``spec.select`` on the train task (never the test prompts), in the form the test is asked in
    (``chat``); returns the chosen value and details.

    Tasks with answer texts are scored teacher-forced (the answer's likelihood or exact match); tasks whose
    replies are checked (ifeval, pronouns) choose γ or M by :func:`select_by_replies`."""
    from attnlab.steer import selection

    if any(not e.answers for e in train.examples):
        if spec.select == "heads":
            raise AttnlabError(f"--select heads ranks single heads by the answer's likelihood on the train split, but "
                               f"task '{train.name}' has no answer text (its replies are checked): give the heads "
                               "with --set heads=...")
        return select_by_replies(model, tokenizer, spec, train, use_chat(tokenizer, train, chat), batch_size, on_step)
    rendered = render(tokenizer, train.examples, use_chat(tokenizer, train, chat), train.scorer)
    examples = [selection.Example(e.prompt, _gold(e, train.scorer), {k: v[0] for k, v in e.spans.items()})
                for e in rendered]
    metric = "accuracy" if train.scorer == "exact" else "logprob"
    options = spec.options
    if spec.select == "heads":
        ranked = selection.rank_heads(model, tokenizer, examples, lambda spans, heads: spec.with_params(heads=heads)
                                      .build(spans), metric="logprob", budget=budget,
                                      layers=options.get("layers") or None, on_step=on_step)
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


def select_by_replies(model, tokenizer, spec: MethodSpec, train: Task, form: bool, batch_size: int = 16,
                      on_step=None) -> dict:
    """Choose γ (ZeroTuning) or M (InstABoost) by the train split's greedy replies, scored by the task's scorer.

    Each grid value steers a greedy reply to every train prompt; the value with the highest mean primary metric
    wins (ties: the earliest, i.e. the smallest on an ascending grid). For M, InstABoost's fluency check applies
    (:func:`attnlab.steer.selection.search_fluent_m`): the perplexity of the steered replies under the unsteered
    model must stay within ``MAX_PPL_RATIO`` times that of the unsteered replies, and the search stops at the
    first M that fails (the paper's code; the paper selects by task accuracy on held-out data,
    with an LLM judge for fluency). One generation of the train split per grid value, plus one unsteered for M.
    """
    from attnlab.steer.selection import perplexity, search_fluent_m

    key = spec.select
    exs = render(tokenizer, train.examples, form, train.scorer)
    prompts = [e.prompt for e in exs]
    primary = None                                                # the scorer's primary metric: its rows' first key

    def replies_and_score(value):
        nonlocal primary
        replies, rows = _reply_rows(model, tokenizer, train, exs, spec.with_params(**{key: value}), batch_size,
                                    on_step)
        primary = next(iter(rows[0]))
        return replies, sum(row.get(primary, 0.0) for row in rows) / len(rows)

    if key == "m":
        base = _reply_rows(model, tokenizer, train, exs, None, batch_size, on_step)[0]

        def try_m(m):
            replies, score = replies_and_score(m)
            return perplexity(model, tokenizer, prompts, replies), lambda: score
        best, results = search_fluent_m(spec.options["grid"], try_m,
                                        perplexity(model, tokenizer, prompts, base),
                                        outputs="train replies", hint="try smaller values with --set grid=...")
    else:
        results = [{key: v, "score": replies_and_score(v)[1]} for v in spec.options["grid"]]
        best = max(results, key=lambda r: r["score"])[key]
    return {key: best, "grid": results, "criterion": f"train replies, {train.scorer} {primary}"}


def _gold(example: EvalExample, scorer: str) -> str:
    """The text a rendered example's model should continue with: its gold label's continuation, or its answer."""
    if scorer == "labels":
        return example.meta["continuations"][example.meta["labels"].index(example.answers[0])]
    return example.answers[0]


def choose(model, tokenizer, task: Task, spec: MethodSpec | None, *, train: Task | None = None,
           budget: int | None = None, on_step=None, form: bool = False,
           batch_size: int = 16) -> tuple[MethodSpec | None, dict | None]:
    """``spec`` with its data-chosen setting (``spec.select``) chosen on ``train``, and the selection's record
    (None when nothing is chosen); the task is checked to provide the method's span."""
    selected = None
    if spec is not None and spec.select:
        if train is None:
            raise AttnlabError(f"choosing {spec.select} from data needs a train split")
        selected = {**select_settings(model, tokenizer, spec, train, budget, on_step, form, batch_size),
                    "options": spec.options}
        spec = spec.with_params(**{spec.select: selected[spec.select]})
    if spec is not None and spec.span_name:
        _pieces(task.examples[0], spec.span_name)
    return spec, selected


def run(model, tokenizer, task: Task, spec: MethodSpec | None, *, train: Task | None = None,
        budget: int | None = None, seed: int = 0, batch_size: int = 16, on_step=None,
        chat: bool | None = None) -> dict:
    """Evaluate ``spec`` on ``task``, in chat form if ``chat`` (default: when the model has a chat template):
    the primary metric unsteered and steered, their paired difference with CI, McNemar, buckets, each secondary
    metric with its own paired CI, the count of replies that could not be read, provenance."""
    from attnlab.profile import model_info

    started = time.time()
    form = use_chat(tokenizer, task, chat)
    spec, selected = choose(model, tokenizer, task, spec, train=train, budget=budget, on_step=on_step, form=form,
                            batch_size=batch_size)
    unsteered = score_task(model, tokenizer, task, None, batch_size, on_step, form)
    steered = score_task(model, tokenizer, task, spec, batch_size, on_step, form) if spec else unsteered
    return summarize(model_info(model).model_dump(), task, spec, selected, train, unsteered, steered, seed=seed,
                     form=form, seconds=time.time() - started)


def summarize(model: dict, task: Task, spec: MethodSpec | None, selected: dict | None, train: Task | None,
              unsteered: dict[str, torch.Tensor], steered: dict[str, torch.Tensor], *, seed: int, form: bool,
              seconds: float) -> dict:
    """The evaluation report from per-example scores (each metric, primary first) unsteered and steered: see
    :func:`run`. ``model`` is the model's provenance (``attnlab.profile.model_info``)."""
    from attnlab import __version__

    metric = next(iter(unsteered))
    u, s = unsteered[metric], steered[metric]
    buckets = {}
    for name in dict.fromkeys(e.bucket for e in task.examples):
        idx = [i for i, e in enumerate(task.examples) if e.bucket == name]
        buckets[name] = {"n": len(idx), "unsteered": float(u[idx].mean()), "steered": float(s[idx].mean()),
                         **paired_bootstrap(u[idx].numpy(), s[idx].numpy(), seed=seed)}
    n = len(task.examples)
    parsed = None if task.encoder or task.scorer in TEACHER_FORCED else get_reply_scorer(task.scorer).parsed
    return {
        "attnlab_version": __version__, "model": model,
        "task": {"name": task.name, "scorer": task.scorer, **task.params},
        "chat": form, "metric": metric,
        "method": None if spec is None else {"name": spec.name, "span": spec.span_name, "params": {
            k: (_heads_label(v) if k == "heads" else v) for k, v in spec.params.items()}},
        "selection": None if selected is None else {"on": {"task": train.name, **train.params}, **{
            k: (_heads_label(v) if k == "heads" else v) for k, v in selected.items()}},
        "n": n, "seed": seed,
        "unsteered": {"accuracy": float(u.mean()), "ci95": wilson(float(u.sum()), n)},
        "steered": {"accuracy": float(s.mean()), "ci95": wilson(float(s.sum()), n)},
        "paired": paired_bootstrap(u.numpy(), s.numpy(), seed=seed),
        "mcnemar": mcnemar_exact(u.numpy(), s.numpy()),
        "secondary": {key: {"unsteered": float(unsteered[key].mean()), "steered": float(steered[key].mean()),
                            **paired_bootstrap(unsteered[key].numpy(), steered[key].numpy(), seed=seed)}
                      for key in list(unsteered)[1:]},
        "unparsed": None if parsed not in unsteered else {
            "unsteered": int((unsteered[parsed] == 0).sum()), "steered": int((steered[parsed] == 0).sum())},
        "buckets": buckets, "seconds": round(seconds, 1),
        "per_example": {"unsteered": u.int().tolist(), "steered": s.int().tolist()},
    }


def _heads_label(heads) -> str:
    """Heads as the command line writes them (``L3H5,L3H0``), whether given as text or as (layer, head) pairs."""
    if isinstance(heads, (list, tuple)) and all(isinstance(h, (list, tuple)) for h in heads):
        return ",".join(head_name(layer, head) for layer, head in heads)
    return str(heads)
