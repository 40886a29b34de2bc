"""Head roles: which heads of a model copy, induct, retrieve, look locally, sink or sleep.

``head_scores(model, tokenizer)`` scores every (layer, head) for previous-token and induction (Olsson et al.
2022), duplicate-token (TransformerLens), retrieval (Wu et al. 2024), local / positional, first-token sink mass,
dormancy (Guo et al. 2024) and, on encoders, delimiter mass (Clark et al. 2019), each through attnlab's
chunked probes; ``attnlab heads`` is its command. One module per kind of score:

* :mod:`.roles` -- repeated random tokens; :mod:`.retrieval` -- needle copies; :mod:`.positional`,
  :mod:`.dormant`, :mod:`.delimiter` -- natural text; :mod:`.scores` -- all of them in one report
  (:mod:`.report`), drawn by :mod:`.plots`.

Roles proven by ablation (:mod:`.ablation`, Wu et al. 2024: mask the top-K heads of a ranking vs K random heads;
``attnlab.heads.ablate`` is :func:`~attnlab.heads.ablation.ablation_curves`) and head importance with its pruning
curve (:mod:`.importance`, Michel et al. 2019); ``attnlab heads --ablate SCORE`` / ``--importance`` run them.
"""
from attnlab.heads.ablation import ablation_curves
from attnlab.heads.ablation import ablation_curves as ablate
from attnlab.heads.importance import head_importance, pruning_curve
from attnlab.heads.report import HeadReport, HeadScore, top_heads
from attnlab.heads.retrieval import needle_batches, retrieval_scores
from attnlab.heads.roles import head_role_scores, repeated_random_tokens
from attnlab.heads.scores import SCORES, default_texts, head_scores

__all__ = ["ablate", "ablation_curves", "head_importance", "pruning_curve", "HeadReport", "HeadScore", "SCORES", "default_texts", "head_role_scores", "head_scores", "needle_batches",
           "repeated_random_tokens", "retrieval_scores", "top_heads"]
