"""ZeroTuning -- Han et al., "Unlocking the Initial Token's Power to Enhance Large Language Models Without
Training" (arXiv 2505.11739).

Scale each steered head's attention on the initial token by ``gamma`` and renormalise:
``a0' = gamma a0 / ((gamma - 1) a0 + 1)`` -- exactly a logit bias ``log gamma`` on that key.
The initial token is the first *real* token of each row (with left padding the official code edits
column 0, a pad, and so does nothing). ``gamma`` is one number for all steered heads or a dict
``{(layer, head): gamma}``; :func:`attnlab.steer.selection.choose_value` picks it on labelled data, or
without labels by minimising the output entropy (the paper's unsupervised mode).
"""
from __future__ import annotations

import math

from attnlab.edits import Edit
from attnlab.steer.base import Method, Param


class ZeroTuning(Method):
    """Rescale the initial token's attention by ``gamma`` on the selected heads (all by default)."""

    name = "zerotuning"
    params = (Param("gamma", "float", 2.0, "factor on the attention to the initial token (per head in Python: a "
                    "dict)", above=0),
              Param("heads", "heads", "all", "heads to steer: all, L3, L3H1,L5H0-7"))
    selectable = {"gamma": (Param("grid", "grid", (0.25, 0.5, 0.75, 1.5, 2.0, 3.0, 4.0), "values of gamma tried",
                                  above=0),)}

    def __init__(self, gamma=2.0, heads="all"):
        if isinstance(gamma, dict):
            self.gamma = {k: self.checked("gamma", v) for k, v in gamma.items()}
        else:
            self.gamma = self.checked("gamma", gamma)
        self.heads = heads

    def build(self, n_layers: int, n_heads: int):
        if isinstance(self.gamma, dict):
            return [Edit(heads=[head], keys="first", bias=math.log(g)) for head, g in self.gamma.items()], []
        return [Edit(heads=self.heads, keys="first", bias=math.log(self.gamma))], []

    def hyperparameters(self) -> dict:
        return {"gamma": self.gamma if not isinstance(self.gamma, dict) else str(self.gamma), "heads": str(self.heads)}
