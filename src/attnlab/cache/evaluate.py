"""Streaming perplexity: dense vs window vs sliding-window-with-recompute vs a sink cache policy.

The protocol of StreamingLLM (Xiao et al., ICLR 2024, ``examples/eval_long_ppl.py``): feed the text one
token at a time with the KV cache carried over, ``nll_t = -log p(x_{t+1} | cache, x_t)``, the cache policy
applied at every step. Modes (the cache budget is ``num_sink + window`` tokens in every bounded mode):

* ``dense``     -- transformers' ``DynamicCache``, until ``dense_tokens`` (default twice the model's positions:
  past them the model was never trained, and its memory grows without bound);
* ``window``    -- ``SinkCache(num_sink=0, window=num_sink + window)``: the most recent tokens only ("0+W");
* ``sink``      -- ``SinkCache(num_sink, window)``: StreamingLLM ("S+W");
* ``h2o`` / ``tova`` -- attention-guided eviction, same budget, attention through attnlab's seam;
* ``snapkv``    -- SnapKV compresses prompts, not decoding steps, so its stream is fed in chunks of its
  observation window (32 tokens) and each chunk is compressed before the next;
* ``recompute`` -- sliding window with re-computation: every ``recompute_every``-th position, a fresh forward
  of the last ``num_sink + window`` tokens (the paper's oracle, O(T W^2), hence the subsample).

:func:`stream_perplexity` returns a JSON-ready report: per mode the mean NLL / perplexity, perplexity per
segment, the running-perplexity curve, tokens/s, the cache's size and the process's peak RSS growth.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attnlab.cache.policies import POLICIES
from attnlab.errors import AttnlabError
from attnlab.models.config import forward_accepts, max_positions
from attnlab.report.memory import PeakRSS

BOUNDED = ("window", *POLICIES)          # the modes with a bounded cache: "window" is the sink policy without sinks
MODES = ("dense", "recompute") + BOUNDED
DEFAULT_MODES = ("dense", "window", "recompute", "policy")
DATA = Path(__file__).resolve().parents[1] / "data"


def default_text() -> str:
    """The bundled stream: ``haystack.txt`` then ``sample.txt`` (public-domain prose), repeated by :func:`stream_ids`."""
    return (DATA / "haystack.txt").read_text(encoding="utf-8") + "\n" + (DATA / "sample.txt").read_text(
        encoding="utf-8") + "\n"


def stream_ids(tokenizer, n_tokens: int, text: str | None = None) -> torch.Tensor:
    """``[1, n_tokens + 1]`` token ids: ``text`` (default :func:`default_text`) tokenized once, repeated, BOS first."""
    if n_tokens < 1:
        raise AttnlabError(f"--tokens must be >= 1, got {n_tokens}")
    unit = tokenizer(text if text is not None else default_text(), add_special_tokens=False, verbose=False)["input_ids"]
    if not unit:
        raise AttnlabError("the text gives no tokens: give a file with some text")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = bos + unit * ((n_tokens + 1) // len(unit) + 1)
    return torch.tensor(ids[: n_tokens + 1])[None]


def resolve_modes(modes, policy: str) -> list[str]:
    """Mode names in order, ``"policy"`` replaced by ``policy``, duplicates dropped; unknown names refused."""
    if policy not in BOUNDED:
        raise AttnlabError(f"unknown policy '{policy}': choose from {', '.join(BOUNDED)}")
    out = []
    for mode in modes:
        mode = policy if mode == "policy" else mode
        if mode not in MODES:
            raise AttnlabError(f"unknown mode '{mode}': choose from {', '.join(MODES)}")
        if mode not in out:
            out.append(mode)
    if not out:
        raise AttnlabError(f"no mode to run: give some of {', '.join(MODES)}")
    return out


def check_settings(model, num_sink: int, window: int, modes: list[str]) -> None:
    """Refuse bad sizes and unsupported architectures before anything runs (one-line :class:`AttnlabError`)."""
    if not isinstance(num_sink, int) or num_sink < 0:
        raise AttnlabError(f"--sinks must be an integer >= 0, got {num_sink}")
    if not isinstance(window, int) or window <= 0:
        raise AttnlabError(f"--window must be an integer > 0, got {window}")
    limit = max_positions(model)
    if limit is not None and num_sink + window >= limit:
        raise AttnlabError(f"sinks + window = {num_sink + window} is larger than the model can place: it has {limit} "
                           f"positions and the new token needs one more; use --sinks + --window <= {limit - 1}")
    for mode in modes:
        if mode in BOUNDED:
            make_cache(model, mode, num_sink, window)        # architecture / policy checks of the cache itself


def make_cache(model, mode: str, num_sink: int, window: int):
    """The ``SinkCache`` of a bounded mode (``window`` mode: no sinks, the same total budget)."""
    from attnlab.cache.sink import SinkCache

    if mode == "window":
        return SinkCache(model, num_sink=0, window=num_sink + window)
    return SinkCache(model, num_sink=num_sink, window=window, policy=mode)


def cache_bytes(cache) -> int:
    """Bytes held by a cache's tensors (keys, values and the sink cache's bookkeeping)."""
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values", "written", "origin", "scores"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


@dataclass
class ModeRun:
    """The raw outcome of one mode: NLL at each evaluated position, timing and memory."""

    mode: str
    positions: list[int]
    nll: torch.Tensor
    seconds: float
    peak_rss: int
    cache_bytes_at_mark: int | None = None
    cache_bytes_end: int | None = None
    cache_tokens_end: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        """Evaluated positions per second of the mode's run."""
        return len(self.positions) / self.seconds if self.seconds > 0 else float("inf")


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def run_cached(model, ids, cache, n_tokens: int, mode: str, chunk: int = 1, observe=None, mark: int = 10_000,
               on_step=None) -> ModeRun:
    """Feed ``ids`` ``chunk`` tokens at a time through ``cache``; NLL of the next token at positions ``0..n-1``."""
    nll = torch.empty(n_tokens)
    at_mark = None
    start = time.perf_counter()
    with torch.no_grad(), observe if observe is not None else nullcontext(), PeakRSS() as peak:
        for t in range(0, n_tokens, chunk):
            c = min(chunk, n_tokens - t)
            logits = model(ids[:, t:t + c], past_key_values=cache, use_cache=True).logits[0]
            nll[t:t + c] = _nll(logits, ids[0, t + 1:t + c + 1])
            if at_mark is None and t + c >= mark:
                at_mark = cache_bytes(cache)
            if on_step is not None:
                on_step(c)
    seconds = time.perf_counter() - start
    return ModeRun(mode, list(range(n_tokens)), nll, seconds, peak.peak, at_mark, cache_bytes(cache),
                   cache.get_seq_length() if mode != "dense" else cache.layers[0].keys.shape[-2])


def run_recompute(model, ids, size: int, n_tokens: int, every: int, on_step=None) -> ModeRun:
    """Sliding window with re-computation at positions ``0, every, 2 every, ...``: a fresh forward of the last
    ``size`` tokens (positions ``0..size-1``) predicts the next one.

    Only the last position's logits are computed (``logits_to_keep=1`` where the model takes it), so the
    baseline does no work that is thrown away: the vocabulary projection of the other positions was ~15% of
    its time on SmolLM2 at 256 tokens."""
    positions = list(range(0, n_tokens, every))
    nll = torch.empty(len(positions))
    keep = {"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {}
    start = time.perf_counter()
    with torch.no_grad(), PeakRSS() as peak:
        for i, t in enumerate(positions):
            logits = model(ids[:, max(0, t + 1 - size):t + 1], use_cache=False, **keep).logits[0, -1:]
            nll[i] = _nll(logits, ids[0, t + 1:t + 2])[0]
            if on_step is not None:
                on_step(min(every, n_tokens - t))
    return ModeRun("recompute", positions, nll, time.perf_counter() - start, peak.peak)


def run_mode(model, ids, mode: str, num_sink: int, window: int, n_tokens: int, dense_tokens: int,
             recompute_every: int, mark: int = 10_000, on_step=None) -> ModeRun:
    """Run one mode (see the module docstring) over the first ``n_tokens`` predictions of ``ids``."""
    from transformers import DynamicCache

    if mode == "dense":
        run = run_cached(model, ids, DynamicCache(config=model.config), dense_tokens, mode, mark=mark, on_step=on_step)
        run.extra["stopped_at"] = dense_tokens
        return run
    if mode == "recompute":
        return run_recompute(model, ids, num_sink + window, n_tokens, recompute_every, on_step)
    cache = make_cache(model, mode, num_sink, window)
    chunk = cache.policy.window_size if mode == "snapkv" else 1
    observe = cache.observing(model) if cache.policy.needs_attention else None
    return run_cached(model, ids, cache, n_tokens, mode, chunk, observe, mark, on_step)


def running_curve(run: ModeRun, points: int = 200) -> dict:
    """Running perplexity ``exp(mean NLL so far)`` at about ``points`` token counts."""
    if not run.positions:
        return dict(tokens=[], ppl=[])
    cum = torch.cumsum(run.nll.double(), 0) / torch.arange(1, len(run.positions) + 1)
    step = max(len(run.positions) // points, 1)
    idx = list(range(step - 1, len(run.positions), step))
    if idx[-1] != len(run.positions) - 1:
        idx.append(len(run.positions) - 1)
    return dict(tokens=[run.positions[i] + 1 for i in idx], ppl=[math.exp(float(cum[i])) for i in idx])


def segments(run: ModeRun, seg: int, n_tokens: int) -> list[dict]:
    """Mean NLL and perplexity of ``run`` in consecutive segments of ``seg`` positions (None where not evaluated)."""
    pos = torch.tensor(run.positions)
    out = []
    for lo in range(0, n_tokens, seg):
        sel = (pos >= lo) & (pos < lo + seg)
        mean = float(run.nll[sel].mean()) if sel.any() else None
        out.append(dict(start=lo, stop=min(lo + seg, n_tokens), n=int(sel.sum()), nll=mean,
                        ppl=None if mean is None else math.exp(mean)))
    return out


def on_positions(run: ModeRun, positions: list[int]) -> float | None:
    """Mean NLL of ``run`` restricted to ``positions`` (a like-for-like comparison with recompute)."""
    index = {p: i for i, p in enumerate(run.positions)}
    picked = [float(run.nll[index[p]]) for p in positions if p in index]
    return sum(picked) / len(picked) if picked else None


def stream_perplexity(model, ids: torch.Tensor, modes=DEFAULT_MODES, num_sink: int = 4, window: int = 252,
                      policy: str = "sink", dense_tokens: int | None = None, recompute_every: int = 25,
                      segment: int | None = None, mark: int = 10_000, on_progress=None) -> dict:
    """Streaming perplexity of ``model`` over ``ids [1, n + 1]`` (``n`` predictions) for each mode.

    ``modes`` are names from :data:`MODES`; ``"policy"`` stands for ``policy`` (``sink``, ``window``, ``h2o``,
    ``tova`` or ``snapkv``). ``on_progress(mode, tokens_done, tokens_total)`` is called as the stream advances.
    Returns the JSON-ready report described in the module docstring; everything is checked before anything runs.
    """
    modes = resolve_modes(modes, policy)
    check_settings(model, num_sink, window, modes)
    ids = ids.to(model.device)
    n = ids.shape[1] - 1
    if n < 1:
        raise AttnlabError("the stream needs at least two tokens")
    positions = max_positions(model)
    dense_n = min(n, dense_tokens or (2 * positions if positions else n))
    seg = segment or max(n // 10, 1)
    runs = {}
    for mode in modes:
        total = dense_n if mode == "dense" else n
        done = [0]

        def step(k, mode=mode, total=total, done=done):
            done[0] += k
            if on_progress is not None:
                on_progress(mode, min(done[0], total), total)

        step(0)
        runs[mode] = run_mode(model, ids, mode, num_sink, window, n, dense_n, recompute_every, mark, step)
    return summarize(runs, model, n, num_sink, window, policy, dense_n, recompute_every, seg)


def summarize(runs: dict, model, n: int, num_sink: int, window: int, policy: str, dense_n: int,
              recompute_every: int, seg: int) -> dict:
    """The report of :func:`stream_perplexity` from its raw :class:`ModeRun` results."""
    config = model.config
    report = dict(model=getattr(model, "attnlab_source", None) or getattr(config, "_name_or_path", "") or
                  type(model).__name__, tokens=n, num_sink=num_sink, window=window, cache_size=num_sink + window,
                  policy=policy, model_positions=max_positions(model),
                  dense_tokens=dense_n if "dense" in runs else None, recompute_every=recompute_every, segment=seg,
                  threads=torch.get_num_threads(), device=str(model.device),
                  dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                  modes={}, segments={}, curves={}, ratios={})
    sub = runs["recompute"].positions if "recompute" in runs else None
    for mode, r in runs.items():
        mean = float(r.nll.mean())
        entry = dict(evaluated=len(r.positions), nll=mean, ppl=math.exp(mean), tokens_per_s=r.tokens_per_s,
                     seconds=r.seconds, peak_rss_bytes=r.peak_rss, cache_bytes_at_10k=r.cache_bytes_at_mark,
                     cache_bytes_end=r.cache_bytes_end, cache_tokens_end=r.cache_tokens_end, **r.extra)
        if mode == "dense" and r.cache_bytes_end:
            per_token = r.cache_bytes_end / dense_n
            entry["cache_bytes_at_10k_extrapolated"] = per_token * 10_000
            entry["cache_bytes_at_100k_extrapolated"] = per_token * 100_000
        if sub is not None:
            entry["nll_on_recompute_positions"] = on_positions(r, sub)
        report["modes"][mode] = entry
        report["segments"][mode] = segments(r, seg, n)
        report["curves"][mode] = running_curve(r)
    report["ratios"] = ratios(report["modes"], policy)
    return report


def ratios(m: dict, policy: str) -> dict:
    """Ratios of the chosen policy's mode against the baselines run alongside it."""
    out, p = {}, policy
    if p not in m:
        return out
    if "window" in m and p != "window":
        out[f"window_ppl / {p}_ppl"] = m["window"]["ppl"] / m[p]["ppl"]
    if "recompute" in m and m[p].get("nll_on_recompute_positions") is not None:
        out[f"{p}_ppl / recompute_ppl (same positions)"] = math.exp(m[p]["nll_on_recompute_positions"] -
                                                                    m["recompute"]["nll"])
        out[f"{p} tokens/s / recompute tokens/s"] = m[p]["tokens_per_s"] / m["recompute"]["tokens_per_s"]
    if "dense" in m:
        out[f"dense tokens/s / {p} tokens/s"] = m["dense"]["tokens_per_s"] / m[p]["tokens_per_s"]
        if m["dense"].get("cache_bytes_at_100k_extrapolated") and m[p]["cache_bytes_end"]:
            out[f"dense cache @100k (extrapolated) / {p} cache"] = \
                m["dense"]["cache_bytes_at_100k_extrapolated"] / m[p]["cache_bytes_end"]
    return out
