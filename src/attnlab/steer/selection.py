"""Choosing what a method acts on, from data: heads (PASTA, ACT) and strengths (ZeroTuning, InstABoost).

* :func:`rank_heads` -- steer one head at a time on a small labelled set and rank heads by the score
  gained (PASTA's model profiling, paper Alg. 1; ACT's per-head calibration / head filtering).
* :func:`pasta_heads` -- PASTA's multi-task selection: the top-k of each task's ranking, then their
  intersection (paper default) or union.
* :func:`choose_value` -- grid search of one hyper-parameter on labelled data (accuracy or answer
  log-likelihood) or, without labels, by minimising the output entropy (ZeroTuning's unsupervised mode).
* :func:`choose_instaboost_m` -- InstABoost's M: the best on the grid subject to a fluency check,
  stopping at the first M that fails it (paper code).

Scores use :func:`attnlab.scoring.score_answers` (the answer log-likelihood or greedy exact match, one
teacher-forced pass) instead of free generation -- PASTA's issue #1 notes that rankings from about 100
examples are close to those from 1000. Every function takes a ``budget`` and reports progress through
``on_step``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnlab.collect import ModelShape
from attnlab.errors import AttnlabError
from attnlab.scoring import score_answers
from attnlab.steer.session import steer

METRICS = ("accuracy", "logprob", "entropy")
MAX_PPL_RATIO = 2.0   # InstABoost's fluency check: steered outputs' perplexity within this factor of unsteered


@dataclass
class Example:
    """A labelled prompt: the answer and the spans (name -> text) a method acts on."""

    prompt: str
    answer: str
    spans: dict


def _spans_of(examples, idx, name):
    return [[examples[i].spans[name]] for i in idx]


def evaluate(model, tokenizer, examples: list[Example], make_method: Callable | None, metric: str = "accuracy",
             batch_size: int = 16) -> float:
    """Mean ``metric`` over ``examples`` with ``make_method(span_lists_by_name)`` steering (None = unsteered).

    ``make_method`` receives a function ``spans(name)`` giving the batch's per-prompt span lists.
    Higher is better for accuracy and logprob; entropy is returned negated so that higher is better too.
    """
    if metric not in METRICS:
        raise AttnlabError(f"unknown metric '{metric}': use one of {', '.join(METRICS)}")
    if not examples:
        raise AttnlabError("no examples to evaluate on")

    def steer_batch(idx):
        if make_method is None:
            return None
        return steer(model, make_method(lambda name: _spans_of(examples, idx, name)), tokenizer=tokenizer)

    scores = score_answers(model, tokenizer, [e.prompt for e in examples], [e.answer for e in examples],
                           steer=steer_batch, batch_size=batch_size)
    if metric == "accuracy":
        return float(scores.correct.float().mean())
    if metric == "logprob":
        return float((scores.logprob / scores.n_tokens).mean())
    return -float(scores.entropy.mean())


def rank_heads(model, tokenizer, examples, make_method: Callable, *, metric: str = "logprob",
               heads=None, budget: int | None = None, layers: int | None = None,
               on_step=None) -> list[tuple[float, tuple[int, int]]]:
    """Score steering each single head; returns ``[(gain over unsteered, (layer, head))]``, best first.

    ``make_method(spans, heads)`` builds the method for one head set. ``heads`` restricts the candidates
    (all heads by default); ``budget`` caps how many are tried (in layer order). ``layers`` searches
    coarse-to-fine, which PASTA's per-head profiling (Zhang et al. 2024: every head of the model, one at a
    time) does not: first each layer is steered whole and ranked, then only the heads of the best ``layers``
    layers are tried one by one -- ``L + layers * H`` evaluations instead of ``L * H`` (57 instead of 270 on
    SmolLM2 with ``layers=3``), at the risk of missing a strong head in a layer that is weak as a whole.
    """
    shape = ModelShape.of(model)
    candidates = list(heads) if heads is not None else [(l, h) for l in range(shape.n_layers)
                                                         for h in range(shape.n_heads)]
    base = evaluate(model, tokenizer, examples, None, metric)

    def gain(head_set) -> float:
        score = evaluate(model, tokenizer, examples, lambda spans: make_method(spans, head_set), metric)
        if on_step:
            on_step(1)
        return score - base

    if layers is not None:
        if layers < 1:
            raise AttnlabError(f"layers must be >= 1, got {layers}")
        by_layer = {}
        for layer, head in candidates:
            by_layer.setdefault(layer, []).append((layer, head))
        layer_gains = sorted(((gain(group), layer) for layer, group in by_layer.items()), key=lambda x: (-x[0], x[1]))
        kept = {layer for _, layer in layer_gains[:layers]}
        candidates = [c for c in candidates if c[0] in kept]
    if budget is not None:
        if budget < 1:
            raise AttnlabError(f"budget must be >= 1, got {budget}")
        candidates = candidates[:budget]
    return sorted(((gain([head]), head) for head in candidates), key=lambda x: (-x[0], x[1]))


def pasta_heads(model, tokenizer, tasks: dict[str, list[Example]], *, alpha: float = 0.01, top_k: int = 8,
                combine: str = "intersection", metric: str = "logprob", budget: int | None = None,
                on_step=None) -> list[tuple[int, int]]:
    """PASTA multi-task model profiling: per task rank single-head steering, keep each top-k, combine.

    Each example's span to emphasise is ``spans["emphasis"]``. Returns the selected (layer, head) pairs,
    which :func:`attnlab.steer.pasta.save_head_config` writes in PASTA's JSON format.
    """
    from attnlab.steer.pasta import PASTA

    if combine not in ("intersection", "union"):
        raise AttnlabError(f"combine must be 'intersection' or 'union', got '{combine}'")
    tops = []
    for name, examples in tasks.items():
        ranked = rank_heads(model, tokenizer, examples,
                            lambda spans, heads: PASTA(spans("emphasis"), heads=heads, alpha=alpha),
                            metric=metric, budget=budget, on_step=on_step)
        tops.append({head for _, head in ranked[:top_k]})
    chosen = set.intersection(*tops) if combine == "intersection" else set.union(*tops)
    return sorted(chosen)


def choose_value(model, tokenizer, examples, make_method: Callable, grid, *, metric: str = "accuracy",
                 on_step=None) -> tuple[float, list[tuple[float, float]]]:
    """Grid-search one hyper-parameter: returns ``(best value, [(value, score)])`` (ties -> earliest)."""
    grid = list(grid)
    if not grid:
        raise AttnlabError("empty grid: give at least one value to try")
    results = []
    for value in grid:
        results.append((value, evaluate(model, tokenizer, examples,
                                        lambda spans, value=value: make_method(spans, value), metric)))
        if on_step:
            on_step(1)
    best = max(results, key=lambda vr: vr[1])
    return best[0], results


@torch.no_grad()
def perplexity(model, tokenizer, prompts: list[str], outputs: list[str]) -> float:
    """Perplexity of ``outputs`` given ``prompts`` under the (unsteered) model: the fluency check.

    Empty (or whitespace-only) outputs -- a reply that ends its turn at once -- have no tokens to score and are
    left out; if every output is empty the perplexity is ``inf`` (no fluent text at all).
    """
    kept = [(p, o) for p, o in zip(prompts, outputs) if o.strip()]
    if not kept:
        return math.inf
    scores = score_answers(model, tokenizer, [p for p, _ in kept], [o for _, o in kept])
    return float(torch.exp(-scores.logprob.sum() / scores.n_tokens.sum()))


def generate_texts(model, tokenizer, prompts: list[str], method=None, max_new_tokens: int = 16,
                   chat: bool = False) -> list[str]:
    """Greedy continuations of ``prompts`` (left padding; each in the chat template if ``chat``), steered by
    ``method`` if given."""
    from attnlab.spans import Spans

    inputs = Spans.encode(tokenizer, prompts, chat=chat)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        if method is None:
            out = model.generate(**inputs, **kwargs)
        else:
            with steer(model, method, tokenizer=tokenizer):
                out = model.generate(**inputs, **kwargs)
    width = inputs["input_ids"].shape[1]
    return [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]


def choose_instaboost_m(model, tokenizer, examples: list[Example], grid=None, *,
                        max_ppl_ratio: float = MAX_PPL_RATIO, max_new_tokens: int = 16, metric: str = "accuracy",
                        on_step=None) -> tuple[float, list[dict]]:
    """InstABoost's M: best ``metric`` among grid values whose outputs stay fluent.

    Fluency: perplexity of the steered greedy outputs under the unsteered model must stay within
    ``max_ppl_ratio`` times that of the unsteered outputs; the search stops at the first M that fails,
    as the paper's code does. Each example's instruction is ``spans["instruction"]``.
    """
    from attnlab.steer.instaboost import M_GRID, InstABoost

    prompts = [e.prompt for e in examples]
    base_ppl = perplexity(model, tokenizer, prompts, generate_texts(model, tokenizer, prompts, None, max_new_tokens))

    def try_m(m):
        outputs = generate_texts(model, tokenizer, prompts, InstABoost([[e.spans["instruction"]] for e in examples],
                                                                       m=m), max_new_tokens)
        score = lambda: evaluate(model, tokenizer, examples,  # noqa: E731 -- run only for a fluent M
                                 lambda spans: InstABoost(spans("instruction"), m=m), metric)
        return perplexity(model, tokenizer, prompts, outputs), score

    return search_fluent_m(list(grid or M_GRID), try_m, base_ppl, max_ppl_ratio=max_ppl_ratio, on_step=on_step,
                           outputs="outputs", hint="lower the grid or raise max_ppl_ratio")


def search_fluent_m(grid, try_m, base_ppl: float, *, max_ppl_ratio: float = MAX_PPL_RATIO, on_step=None,
                    outputs: str = "outputs", hint: str = "try smaller values") -> tuple[float, list[dict]]:
    """InstABoost's search over M (Guardieiro et al. 2025, the official code): grid values in order, each kept only
    if its steered outputs' perplexity (under the unsteered model) is within ``max_ppl_ratio`` x ``base_ppl``; the
    search stops at the first M that fails. ``try_m(m)`` returns that perplexity and a function giving M's score,
    called for fluent M only. The best score wins, ties to the earliest M. Returns it and one record per M tried.
    """
    if math.isinf(base_ppl):
        raise AttnlabError(f"the unsteered {outputs} are all empty: there is no text to check M's fluency against")
    results = []
    for m in grid:
        ppl, score = try_m(m)
        fluent = ppl <= max_ppl_ratio * base_ppl
        results.append({"m": m, "perplexity": ppl, "base_perplexity": base_ppl, "fluent": fluent,
                        "score": score() if fluent else None})
        if on_step:
            on_step(1)
        if not fluent:
            break
    passing = [r for r in results if r["fluent"]]
    if not passing:
        raise AttnlabError(f"no M on the grid keeps the {outputs} fluent (perplexity within {max_ppl_ratio:g}x the "
                           f"unsteered {outputs}'): {hint}")
    return max(passing, key=lambda r: r["score"])["m"], results
