"""Ablation that proves head roles: mask the top-K heads of a ranking, measure a task, compare with K random heads.

The causal check of Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality" (ICLR 2025;
``needle_in_haystack_with_mask.py --mask_top K`` in ``nightdessert/Retrieval_Head``, K < 0 masking random
heads): masking the top retrieval heads breaks needle retrieval while masking as many random heads barely
matters. The same check holds for an induction ranking (Olsson et al. 2022) on repeated random tokens.

* **Masking** goes through the seam: the plan's ``head_gate`` is 0 on the masked heads and 1 elsewhere, which is
  the output scale 0 of ``attnlab.HeadScale(heads, scale=0)`` (the tests check both against eager attention with
  the head's output zeroed).
* **Scoring** is teacher-forced, cheaper than generation: the input is the prompt followed by the answer, and
  each scored token is predicted greedily from the tokens before it. ``exact`` tasks count an example correct
  when every scored token is the greedy prediction (the copied value, exact match); ``token`` tasks take the
  share of scored tokens predicted. The loss is the mean cross-entropy of the scored tokens.
* **Random baseline**: draw ``d`` is a permutation of all heads from ``torch.Generator().manual_seed(seed + d)``;
  its first K heads are masked, so each draw's sets are nested like the top-K sets.
* **Intervals**: 95% percentile bootstrap over examples. For the random curve each example's score is first
  averaged over the draws (the draws' own means are listed too); the ranked-minus-random difference is a paired
  bootstrap (:func:`attnlab.evals.stats.paired_bootstrap`).

Tasks (:data:`TASKS`): ``needle`` -- a ``key=value`` record in KJV prose (:func:`attnlab.evals.tasks.needle_task`),
the value's tokens scored, in chat form after the reply prefix "The number of the key K is " (SmolLM2 ignores
"answer with the number only" and writes that sentence); ``induction`` -- ``[BOS] r r`` with ``r`` random tokens,
the second copy scored from its second token on (the first has no earlier successor to copy); ``text`` -- KJV
prose, every token scored (a language-modelling loss).

Differences from Wu et al.: they mask heads in the attention computation during greedy generation on Paul
Graham essays of 1K-50K tokens and score ROUGE of the reply; here contexts are short and scoring is
teacher-forced exact match.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from attnlab import seam
from attnlab.batching import pad_rows, position_ids
from attnlab.errors import AttnlabError
from attnlab.evals.stats import paired_bootstrap
from attnlab.models.config import ModelShape, forward_accepts
from attnlab.plan import Plan
from attnlab.spans import chat_wrap, has_chat_template, head_name

KS = (0, 1, 2, 4, 8, 16, 32)
RESAMPLES = 2000


@dataclass
class ScoredTokens:
    """Teacher-forced examples: ``ids[i]`` (token ids) and ``scored[i]`` (the positions whose token is predicted
    from the ones before it, a bool mask as long as ``ids[i]``); ``metric`` is ``exact`` or ``token``."""

    name: str
    ids: list[list[int]]
    scored: list[torch.Tensor]
    metric: str
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.ids:
            raise AttnlabError(f"task '{self.name}' has no examples: ask for n >= 1")
        if self.metric not in ("exact", "token"):
            raise AttnlabError(f"metric must be 'exact' or 'token', got {self.metric!r}")
        for i, (row, mask) in enumerate(zip(self.ids, self.scored)):
            if len(row) != len(mask) or not mask[1:].any() or mask[0]:
                raise AttnlabError(f"example {i + 1} of '{self.name}' must score at least one token after its first")

    def __len__(self) -> int:
        return len(self.ids)


def teacher_forced(tokenizer, prompt: str, answer: str, chat: bool) -> tuple[list[int], torch.Tensor]:
    """Ids of ``prompt + answer`` with the answer's tokens scored (refused when the prompt's tokens change)."""
    special = not chat
    prefix = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    full = tokenizer(prompt + answer, add_special_tokens=special)["input_ids"]
    if full[:len(prefix)] != prefix or len(full) == len(prefix):
        raise AttnlabError(f"the answer {answer!r} merges with the end of its prompt into other tokens, so it cannot "
                           "be teacher-forced: end the prompt with a space or a newline")
    scored = torch.zeros(len(full), dtype=torch.bool)
    scored[len(prefix):] = True
    return list(full), scored


def needle_examples(tokenizer, n: int = 50, seed: int = 0, length: int = 160, chat: bool | None = None) -> ScoredTokens:
    """A ``key=value`` record at depths 0-100% of ``length`` tokens of prose; the value's tokens scored (exact).

    Prompts from :func:`attnlab.evals.tasks.needle_task`. In chat form the reply starts with "The number of the
    key K is " and the value follows; in plain form the value follows ``Answer:``.
    """
    from attnlab.evals.tasks import needle_task

    chat = has_chat_template(tokenizer) if chat is None else chat
    task = needle_task(tokenizer, n, seed, lengths=(length,), chat=chat)
    ids, scored = [], []
    for ex in task.examples:
        if chat:
            key = re.match(r"Records: (\w+)=", ex.spans["emphasis"]).group(1)
            prompt = chat_wrap(tokenizer, ex.prompt)[0] + f"The number of the key {key} is "
            row, mask = teacher_forced(tokenizer, prompt, ex.answers[0], chat=True)
        else:
            row, mask = teacher_forced(tokenizer, ex.prompt, ex.answers[0], chat=False)
        ids.append(row)
        scored.append(mask)
    return ScoredTokens("needle", ids, scored, "exact", {"n": n, "seed": seed, "length": length, "chat": chat})


def induction_examples(tokenizer, n: int = 50, seed: int = 0, length: int = 50) -> ScoredTokens:
    """``[BOS] r r`` with ``r`` = ``length`` random tokens (Olsson et al. 2022); the second copy's tokens from its
    second on are scored (share of tokens predicted)."""
    from attnlab.heads.roles import repeated_random_tokens

    if length < 2:
        raise AttnlabError(f"length must be at least 2 random tokens, got {length}")
    rows = repeated_random_tokens(tokenizer, length, n, seed)
    scored = torch.zeros(rows.shape[1], dtype=torch.bool)
    scored[length + 2:] = True
    return ScoredTokens("induction", rows.tolist(), [scored.clone() for _ in range(n)], "token",
                        {"n": n, "seed": seed, "length": length})


def text_examples(tokenizer, n: int = 16, seed: int = 0, tokens: int = 64) -> ScoredTokens:
    """``n`` windows of ``tokens`` tokens of the bundled KJV prose from seeded starts; every token after the first
    scored (the language-modelling loss and next-token accuracy)."""
    rng = np.random.default_rng(seed)
    words = resources.files("attnlab").joinpath("data/haystack.txt").read_text(encoding="utf-8").split(" ")
    ids, scored = [], []
    for start in rng.integers(0, len(words) - 4 * tokens, size=n):
        row = tokenizer(" ".join(words[start:start + 2 * tokens]))["input_ids"][:tokens]
        mask = torch.ones(len(row), dtype=torch.bool)
        mask[0] = False
        ids.append(row)
        scored.append(mask)
    return ScoredTokens("text", ids, scored, "token", {"n": n, "seed": seed, "tokens": tokens})


TASKS = {"needle": needle_examples, "induction": induction_examples, "text": text_examples}


def make_examples(task, tokenizer, n: int, seed: int = 0, **params) -> ScoredTokens:
    """``task`` as :class:`ScoredTokens`: a name of :data:`TASKS` (built with ``n``, ``seed``, ``params``) or itself."""
    if isinstance(task, ScoredTokens):
        return task
    if task not in TASKS:
        raise AttnlabError(f"unknown ablation task '{task}': use one of {', '.join(TASKS)}")
    return TASKS[task](tokenizer, n=n, seed=seed, **params)


def batch_losses(model, rows: list[list[int]], scored: list[torch.Tensor], gate: torch.Tensor | None, pad_id):
    """One attached forward over ``rows`` (left-padded) with heads gated by ``gate`` (``[L, H]`` or ``[B, L, H]``).

    Returns ``(loss [B], correct [B])``: each row's mean cross-entropy over its scored tokens (differentiable in
    ``gate`` when gradients are on) and its share of scored tokens that are the greedy prediction.
    """
    device = next(model.parameters()).device
    ids, mask = pad_rows(rows, pad_id)
    width = ids.shape[1]
    target = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, s in enumerate(scored):
        target[b, width - len(s):] = s
    keep = torch.nonzero(target.any(0)).squeeze(1) - 1                      # the positions that predict them
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    keep_arg = forward_accepts(model, "logits_to_keep")
    if forward_accepts(model, "position_ids"):
        inputs["position_ids"] = position_ids(mask).to(device)
    if keep_arg:
        inputs["logits_to_keep"] = keep.to(device)
    with seam.attached(model, Plan(head_gate=gate)):
        logits = model(**inputs).logits
    if not keep_arg:
        logits = logits[:, keep.to(device)]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))    # [B, kept, V]
    wanted = target[:, keep + 1].to(device)                                   # [B, kept]
    truth = ids[:, keep + 1].to(device)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), truth, reduction="none")
    hit = (logits.argmax(-1) == truth) & wanted
    counts = wanted.sum(-1)
    return (ce * wanted).sum(-1) / counts, hit.sum(-1) / counts


def score(model, examples: ScoredTokens, gate: torch.Tensor | None = None, batch_size: int = 8,
          pad_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per example: accuracy (``exact``: 1 when every scored token is predicted; ``token``: the share) and loss,
    with the heads gated by ``gate`` (``[L, H]``; None: the model as it is)."""
    accuracy, loss = [], []
    order = sorted(range(len(examples)), key=lambda i: len(examples.ids[i]))     # similar lengths pad little
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            l, c = batch_losses(model, [examples.ids[i] for i in idx], [examples.scored[i] for i in idx], gate, pad_id)
            loss += list(zip(idx, l.cpu().tolist()))
            accuracy += list(zip(idx, (c == 1).float().cpu().tolist() if examples.metric == "exact"
                                 else c.cpu().tolist()))
    return np.array([v for _, v in sorted(accuracy)]), np.array([v for _, v in sorted(loss)])


def ranked_heads(ranking, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """``ranking`` as a list of (layer, head), most important first: a list as given, heads named in order
    (``"L18H6,L17H3"``, :class:`~attnlab.spans.HeadSet` syntax), or an ``[L, H]`` score tensor sorted by descending
    score (ties by layer, then head)."""
    if isinstance(ranking, str):
        from attnlab.spans import HeadSet

        names = [part.strip() for part in ranking.split(",") if part.strip()]
        ranking = [pair for name in names for pair in HeadSet.parse(name, n_layers, n_heads)]
    if isinstance(ranking, (torch.Tensor, np.ndarray)):
        scores = torch.as_tensor(ranking, dtype=torch.float64)
        if scores.shape != (n_layers, n_heads):
            raise AttnlabError(f"a ranking tensor must be [layers, heads] = [{n_layers}, {n_heads}], got "
                               f"{list(scores.shape)}")
        if torch.isnan(scores).any():
            raise AttnlabError("the ranking scores contain NaN: score every head")
        flat = scores.flatten()
        order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))
        return [divmod(i, n_heads) for i in order]
    heads = [(int(l), int(h)) for l, h in ranking]
    bad = [(l, h) for l, h in heads if not (0 <= l < n_layers and 0 <= h < n_heads)]
    if bad:
        raise AttnlabError(f"head L{bad[0][0]}H{bad[0][1]} does not exist: the model has {n_layers} layers x "
                           f"{n_heads} heads")
    if len(set(heads)) != len(heads):
        raise AttnlabError("the ranking names a head twice: give each head once")
    return heads


def mask_gate(heads, n_layers: int, n_heads: int) -> torch.Tensor:
    """``[L, H]`` ones with 0 on ``heads``."""
    gate = torch.ones(n_layers, n_heads)
    for layer, head in heads:
        gate[layer, head] = 0.0
    return gate


def random_orders(n_layers: int, n_heads: int, draws: int, seed: int) -> list[list[tuple[int, int]]]:
    """Draw ``d``: all heads in the order of ``torch.randperm`` with generator seed ``seed + d``."""
    return [[divmod(int(i), n_heads) for i in torch.randperm(n_layers * n_heads,
                                                              generator=torch.Generator().manual_seed(seed + d))]
            for d in range(draws)]


def mean_ci(values, resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` over examples."""
    v = np.asarray(values, dtype=float)
    means = v[np.random.default_rng(seed).integers(0, v.size, size=(resamples, v.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass
class AblationCurves:
    """Task scores with the first K heads of ``ranked`` masked, and with K random heads (``draws`` draws).

    ``ranked_scores[K]`` / ``ranked_losses[K]``: per example ``[n]``; ``random_scores[K]`` / ``random_losses[K]``:
    ``[draws, n]``. ``label`` names the ranked curve (``top-K ranked``, or ``least important first`` for pruning).
    """

    task: str
    params: dict
    metric: str
    n_heads_total: int
    ks: list[int]
    ranked: list[tuple[int, int]]
    ranked_scores: dict
    ranked_losses: dict
    random_scores: dict
    random_losses: dict
    label: str = "top-K ranked"
    resamples: int = RESAMPLES

    def _summary(self, per_example) -> dict:
        return {"mean": float(np.mean(per_example)), "ci95": list(mean_ci(per_example, self.resamples))}

    def to_json(self) -> dict:
        """Per K: the masked heads, both curves' accuracy and loss with 95% intervals, each draw's mean, and the
        paired difference ranked - random."""
        rows = []
        for k in self.ks:
            rnd_acc, rnd_loss = self.random_scores[k].mean(0), self.random_losses[k].mean(0)
            rows.append({
                "k": k, "fraction": k / self.n_heads_total, "heads": [head_name(*h) for h in self.ranked[:k]],
                "ranked": {"accuracy": self._summary(self.ranked_scores[k]),
                           "loss": self._summary(self.ranked_losses[k])},
                "random": {"accuracy": self._summary(rnd_acc), "loss": self._summary(rnd_loss),
                           "per_draw_accuracy": self.random_scores[k].mean(1).tolist(),
                           "per_draw_loss": self.random_losses[k].mean(1).tolist()},
                "ranked_minus_random": {
                    "accuracy": paired_bootstrap(rnd_acc, self.ranked_scores[k], resamples=self.resamples),
                    "loss": paired_bootstrap(rnd_loss, self.ranked_losses[k], resamples=self.resamples)}})
        return {"task": self.task, "params": self.params, "metric": self.metric, "label": self.label,
                "draws": int(self.random_scores[self.ks[-1]].shape[0]), "n": int(len(self.ranked_scores[0])),
                "heads_total": self.n_heads_total, "curve": rows}

    def plot(self, path, title: str | None = None) -> Path:
        """Accuracy and loss against K: the ranked curve and the random one with 95% bands, each draw as dots."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data = self.to_json()["curve"]
        x = np.arange(len(self.ks))
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
        for ax, key, draws in ((axes[0], "accuracy", "per_draw_accuracy"), (axes[1], "loss", "per_draw_loss")):
            for name, colour, label in (("ranked", "#d62728", self.label), ("random", "#1f77b4", "random heads")):
                mean = [r[name][key]["mean"] for r in data]
                lo, hi = zip(*[r[name][key]["ci95"] for r in data])
                ax.plot(x, mean, marker="o", color=colour, label=label)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.2)
            for i, r in enumerate(data):
                ax.scatter([i] * len(r["random"][draws]), r["random"][draws], s=8, color="#1f77b4", alpha=0.5)
            ax.set_xticks(x, [f"{k}\n{100 * k / self.n_heads_total:.2g}%" for k in self.ks], fontsize=8)
            ax.set_xlabel("heads masked (K, share of all heads)")
            ax.set_ylabel(("exact match" if self.metric == "exact" else "token accuracy") if key == "accuracy"
                          else "loss (nats / scored token)")
            if key == "accuracy":
                ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=8)
        fig.suptitle(title or f"{self.task}: {self.label} vs random heads masked (n={len(self.ranked_scores[0])}, "
                     f"95% bootstrap bands)", fontsize=10)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def ablation_curves(model, tokenizer, ranking, task="needle", ks=KS, draws: int = 3, n: int = 50, seed: int = 0,
                    batch_size: int = 8, label: str = "top-K ranked", **task_params) -> AblationCurves:
    """Mask the top-K heads of ``ranking`` and K random heads, for each K of ``ks``, and score ``task``.

    The causal test of retrieval heads in Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context
    Factuality"; module docstring). ``ranking``: (layer, head) pairs most important first, or an ``[L, H]`` score
    tensor (higher = more important). ``task``: a name of :data:`TASKS` (``n`` examples from ``seed``, with
    ``task_params``) or :class:`ScoredTokens`. Random draw ``d`` uses seed ``seed + d``.
    """
    shape = ModelShape.of(model)
    total = shape.n_layers * shape.n_heads
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 0 or ks[-1] > total:
        raise AttnlabError(f"ks must lie between 0 and the model's {total} heads, got {ks}")
    if draws < 1:
        raise AttnlabError(f"draws must be at least 1, got {draws}")
    ranked = ranked_heads(ranking, shape.n_layers, shape.n_heads)
    if len(ranked) < ks[-1]:
        raise AttnlabError(f"the ranking names {len(ranked)} heads but K goes up to {ks[-1]}: rank more heads or "
                           "lower ks")
    examples = make_examples(task, tokenizer, n, seed, **task_params)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)

    def run(heads):
        return score(model, examples, mask_gate(heads, shape.n_layers, shape.n_heads), batch_size, pad)

    base = run([])
    ranked_scores, ranked_losses, random_scores, random_losses = {}, {}, {}, {}
    orders = random_orders(shape.n_layers, shape.n_heads, draws, seed)
    for k in ks:
        ranked_scores[k], ranked_losses[k] = base if k == 0 else run(ranked[:k])
        rnd = [base if k == 0 else run(order[:k]) for order in orders]
        random_scores[k] = np.stack([r[0] for r in rnd])
        random_losses[k] = np.stack([r[1] for r in rnd])
    return AblationCurves(examples.name, examples.params, examples.metric, total, ks, ranked[:ks[-1]], ranked_scores,
                          ranked_losses, random_scores, random_losses, label)
