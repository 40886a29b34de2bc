"""``head_scores``: every head-role score of one model in one report (see :mod:`attnlab.heads`).

Three groups of inputs, one probed forward per batch each, all through attnlab's seam (chunked attention,
never eager maps):

* ``random`` -- repeated random tokens: previous-token, induction, duplicate-token (:mod:`.roles`);
* ``needle`` -- teacher-forced needle copies: retrieval (:mod:`.retrieval`), causal LMs only;
* ``text`` -- natural texts (default: the sample text and three passages of the bundled KJV prose): first-token
  mass, local, mean distance (:mod:`.positional`), relative output norm and dormant share (:mod:`.dormant`),
  and for encoders the delimiter masses (:mod:`.delimiter`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import torch

from attnlab.errors import AttnlabError
from attnlab.heads import delimiter, dormant, positional, retrieval, roles
from attnlab.heads.report import HeadReport, HeadScore, NeedleExample, flagged_heads
from attnlab.models.config import ModelShape
from attnlab.probes.attention import FirstTokenMass


@dataclass(frozen=True)
class ScoreSpec:
    """What a score is: its definition, inputs group, source, ranking end, threshold and the models it applies to."""

    description: str
    group: str                          # random, needle or text
    reference: str
    order: str = "high"
    threshold: float | None = None
    models: str = "all"                 # all, causal or encoder


SCORES = {
    "previous_token": ScoreSpec("mean A[i, i-1] over queries i >= 1", "random", "Olsson et al. 2022"),
    "induction": ScoreSpec("mean A[i, i-(n-1)] over second-copy queries (prefix matching)", "random",
                           "Olsson et al. 2022, In-context Learning and Induction Heads"),
    "duplicate_token": ScoreSpec("mean attention on earlier occurrences of the query's own token, over queries that "
                                 "have one", "random", "TransformerLens head_detector duplicate_token pattern"),
    "retrieval": ScoreSpec("share of copied needle tokens (unique in the context) whose top-attended key is the "
                           "token being copied; mean over examples the model copies", "needle",
                           "Wu et al. 2024, Retrieval Head Mechanistically Explains Long-Context Factuality",
                           threshold=retrieval.RETRIEVAL_THRESHOLD, models="causal"),
    "first_token_mass": ScoreSpec("mean attention on the first real token over the queries after it (sink)", "text",
                                  "Xiao et al. 2024 (StreamingLLM); Gu et al. 2025", threshold=0.3),
    "local": ScoreSpec("mean attention on keys within `window` tokens of the query, over queries >= window tokens "
                       "after the first", "text", "Clark et al. 2019 (positional heads), window form"),
    "mean_distance": ScoreSpec("mean sum_j A[i, j] |i - j| over real queries, in tokens", "text",
                               "Clark et al. 2019 / Voita et al. 2019 (positional heads)", order="low"),
    "output_norm": ScoreSpec("head's mean output norm ||(A v) W_O^h|| over the queries after the first, divided by "
                             "its layer's mean over heads", "text",
                             "Guo et al. 2024; Sandoval-Segura et al. 2025 (AHON, layer-normalised)", order="low",
                             threshold=dormant.DORMANT_NORM),
    "dormant": ScoreSpec("share of texts on which the head is dormant: first-token mass >= sink and relative output "
                         "norm <= norm", "text", "Guo et al. 2024, Active-Dormant Attention Heads", threshold=0.5),
    "cls_mass": ScoreSpec("mean attention on [CLS] over real queries", "text",
                          "Clark et al. 2019, What Does BERT Look At?", threshold=delimiter.DELIMITER_THRESHOLD,
                          models="encoder"),
    "sep_mass": ScoreSpec("mean attention on [SEP] over real queries", "text",
                          "Clark et al. 2019, What Does BERT Look At?", threshold=delimiter.DELIMITER_THRESHOLD,
                          models="encoder"),
    "punctuation_mass": ScoreSpec("mean attention on '.' and ',' tokens over real queries", "text",
                                  "Clark et al. 2019, What Does BERT Look At?",
                                  threshold=delimiter.DELIMITER_THRESHOLD, models="encoder"),
}


def default_texts() -> list[str]:
    """The natural texts of the ``text`` group: the sample text and three 150-word passages of the KJV prose."""
    sample = resources.files("attnlab").joinpath("data/sample.txt").read_text(encoding="utf-8").strip()
    words = resources.files("attnlab").joinpath("data/haystack.txt").read_text(encoding="utf-8").split()
    return [sample] + [" ".join(words[start:start + 150]) for start in (0, 2500, 5000)]


def applicable(shape: ModelShape) -> list[str]:
    """The scores that apply to a causal LM or to an encoder."""
    kind = "causal" if shape.causal else "encoder"
    return [name for name, spec in SCORES.items() if spec.models in ("all", kind)]


def check_scores(names, shape: ModelShape) -> list[str]:
    """``names`` (None: every applicable score) checked against :data:`SCORES` and the model, with one-line errors."""
    if names is None:
        return applicable(shape)
    names = list(names)
    if not names:
        raise AttnlabError(f"no score named: choose from {', '.join(SCORES)}")
    for name in names:
        if name not in SCORES:
            raise AttnlabError(f"unknown score '{name}': choose from {', '.join(SCORES)}")
        if name not in applicable(shape):
            need = "a causal LM" if SCORES[name].models == "causal" else "an encoder"
            raise AttnlabError(f"score '{name}' needs {need}; this model's scores are {', '.join(applicable(shape))}")
    return list(dict.fromkeys(names))


def _check_settings(shape: ModelShape, length, batch, window, context_tokens, dormant_sink, dormant_norm,
                    min_copy) -> None:
    for name, value, low in (("length", length, 2), ("batch", batch, 1), ("window", window, 1),
                             ("context_tokens", context_tokens, 16)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise AttnlabError(f"{name} must be a whole number >= {low}, got {value!r}")
    for name, value in (("dormant_sink", dormant_sink), ("dormant_norm", dormant_norm)):
        if not 0 < value <= 1:
            raise AttnlabError(f"{name} must be in (0, 1], got {value}")
    if not 0 <= min_copy < 1:
        raise AttnlabError(f"min_copy must be in [0, 1), got {min_copy}")
    if shape.max_positions and 1 + 2 * length > shape.max_positions:
        raise AttnlabError(f"length {length} makes {1 + 2 * length} tokens but the model takes at most "
                           f"{shape.max_positions}: use length <= {(shape.max_positions - 1) // 2}")


NEEDLE_OVERHEAD = 80            # lead, needle, question and answer tokens around the haystack (at most)
HAYSTACK_TOKENS = 1000


def _context_tokens(shape: ModelShape, asked: int | None) -> int:
    """The haystack length: ``asked``, or 1000 cut to the model's positions; refused when it does not fit."""
    room = shape.max_positions - NEEDLE_OVERHEAD if shape.max_positions else None
    if asked is None:
        return min(HAYSTACK_TOKENS, room) if room else HAYSTACK_TOKENS
    if room is not None and asked > room:
        raise AttnlabError(f"context_tokens {asked} plus the needle, question and answer exceed the model's "
                           f"{shape.max_positions} positions: use context_tokens <= {room}")
    return asked


def _text_pass(model, tokenizer, shape, texts, window, batch_size, on_forward) -> dict[str, torch.Tensor]:
    """Per-text ``[N, L, H]`` first-token mass, local, mean distance, output norm (and delimiter masses)."""
    from attnlab.collect import encode, forward_with_probes

    base = getattr(model, "base_model", model)
    out: dict[str, list] = {}
    for first in range(0, len(texts), batch_size):
        enc = encode(tokenizer, texts[first:first + batch_size], shape, left_pad=shape.causal)
        valid = enc.attention_mask.bool()
        probes = [FirstTokenMass(), positional.LocalMass(window), positional.MeanDistance()]
        if not shape.causal:
            probes += delimiter.delimiter_probes(tokenizer, enc.input_ids, valid)
        with dormant.head_output_norms(base, shape.n_heads, valid) as norms:
            forward_with_probes(model, enc.input_ids, enc.attention_mask, probes)
        for probe in probes:
            out.setdefault(probe.name.removeprefix("span_mass:"), []).append(probe.result().transpose(0, 1))
        out.setdefault("output_norm", []).append(torch.stack([norms[l] for l in sorted(norms)], dim=1))
        on_forward()
    return {name: torch.cat(parts) for name, parts in out.items()}


def head_scores(model, tokenizer=None, *, scores=None, length: int = 50, batch: int = 8, seed: int = 0,
                texts=None, context_tokens: int | None = None, depths=retrieval.DEPTHS, window: int = 4,
                dormant_sink: float = dormant.DORMANT_SINK, dormant_norm: float = dormant.DORMANT_NORM,
                min_copy: float = retrieval.MIN_COPY, batch_size: int = 8, on_progress=None) -> HeadReport:
    """Score every (layer, head) of ``model`` for the roles in :data:`SCORES` (all that apply by default).

    Induction and previous-token follow Olsson et al. 2022, duplicate-token TransformerLens, retrieval Wu et al.
    2024 (needle copy, teacher-forced: :mod:`attnlab.heads.retrieval`), dormant heads Guo et al. 2024
    (:mod:`attnlab.heads.dormant`), delimiter heads Clark et al. 2019 (encoders). ``model`` is a loaded model
    (give ``tokenizer``) or anything :func:`attnlab.load` takes. ``on_progress(done, total)`` follows the forwards.
    """
    from attnlab import __version__
    from attnlab.collect import as_texts
    from attnlab.models.loading import load
    from attnlab.profile import model_info
    from attnlab import seam

    model, tokenizer = load(model, tokenizer)
    seam.check_supported(model)
    shape = ModelShape.of(model)
    names = check_scores(scores, shape)
    _check_settings(shape, length, batch, window, context_tokens, dormant_sink, dormant_norm, min_copy)
    groups = {SCORES[n].group for n in names}
    texts = default_texts() if texts is None else as_texts(texts)
    hay = _context_tokens(shape, context_tokens) if "needle" in groups else None
    total = ("random" in groups) + ("needle" in groups) * len(retrieval.NEEDLES) + \
        ("text" in groups) * -(-len(texts) // batch_size)
    done = [0]

    def forward_done():
        done[0] += 1
        if on_progress:
            on_progress(done[0], total)

    values: dict[str, torch.Tensor | None] = {}
    notes: dict[str, str] = {}
    runtime: dict[str, float] = {}
    needle_rows: list[NeedleExample] = []
    if "random" in groups:
        start = time.perf_counter()
        values.update(roles.head_role_scores(model, tokenizer, length=length, batch=batch, seed=seed))
        runtime["random"] = time.perf_counter() - start
        forward_done()
    if "needle" in groups:
        start = time.perf_counter()
        got = retrieval.retrieval_scores(model, tokenizer, hay, depths, seed, min_copy, on_forward=forward_done)
        values["retrieval"] = got["scores"]
        runtime["needle"] = time.perf_counter() - start
        pairs = [(needle, depth) for needle, _ in retrieval.NEEDLES for depth in depths]
        for i, (needle, depth) in enumerate(pairs):
            needle_rows.append(NeedleExample(needle=needle, depth=depth,
                                             scored_tokens=got["scored_tokens"][i],
                                             copy_accuracy=round(float(got["copy_accuracy"][i]), 4),
                                             kept=bool(got["kept"][i])))
        if got["scores"] is None:
            notes["retrieval"] = (f"the model copied no needle (greedy copy accuracy <= {min_copy} on all "
                                  f"{len(needle_rows)} examples), so no head can be scored")
    if "text" in groups:
        start = time.perf_counter()
        per_text = _text_pass(model, tokenizer, shape, texts, window, batch_size, forward_done)
        rel = dormant.relative_norm(per_text.pop("output_norm"))
        values["output_norm"] = rel.mean(0)
        values["dormant"] = dormant.dormant_share(per_text["first_token_mass"], rel, dormant_sink, dormant_norm)
        values.update({name: v.mean(0) for name, v in per_text.items()})
        runtime["text"] = time.perf_counter() - start
    inputs = {"random": f"{batch} rows of [first token] r r, |r| = {length} random tokens, seed {seed}",
              "needle": f"{len(retrieval.NEEDLES)} needles x depths {list(depths)} in {hay} tokens of KJV prose, "
                        "teacher-forced copy",
              "text": f"{len(texts)} natural text(s)"}
    report_scores = {}
    for name in names:
        spec = SCORES[name]
        v = values.get(name)
        rows = None if v is None else [[round(float(x), 5) for x in row] for row in v]
        report_scores[name] = HeadScore(
            description=spec.description, inputs=inputs[spec.group], reference=spec.reference, order=spec.order,
            threshold=spec.threshold, values=rows,
            flagged=[] if rows is None else flagged_heads(rows, spec.order, spec.threshold), note=notes.get(name))
    settings = {"scores": names, "length": length, "batch": batch, "seed": seed, "window": window,
                "context_tokens": hay, "depths": list(depths), "min_copy": min_copy, "dormant_sink": dormant_sink,
                "dormant_norm": dormant_norm, "n_texts": len(texts), "default_texts": texts == default_texts()}
    return HeadReport(attnlab_version=__version__, model=model_info(model), settings=settings, scores=report_scores,
                      needle_examples=needle_rows, runtime_s={k: round(v, 3) for k, v in runtime.items()})
