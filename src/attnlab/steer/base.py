"""The base of every steering method: a small object that names its spans and builds Edits."""
from __future__ import annotations

import math

from attnlab.errors import AttnlabError


class Method:
    """A published steering method. Subclasses set ``name`` and implement :meth:`build`.

    ``build(n_layers, n_heads)`` returns ``(edits, dynamic_edits)``; ``spans()`` maps each span name the
    edits use to what the user gave (text, character ranges, per-prompt lists or ``SpanInputs``).
    """

    name = "method"

    def spans(self) -> dict:
        return {}

    def build(self, n_layers: int, n_heads: int) -> tuple[list, list]:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The method's settings, for reports."""
        return {k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool)) or v is None}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


def check_fraction(name: str, value: float, method: str) -> float:
    """A factor that must lie strictly between 0 and 1 (PASTA's alpha, ACT's beta)."""
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise AttnlabError(f"{method}: {name} must be in (0, 1), got {value}")
    return float(value)


def check_positive(name: str, value: float, method: str) -> float:
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise AttnlabError(f"{method}: {name} must be a positive number, got {value}")
    return float(value)


def require_spans(spec, method: str, what: str):
    if spec is None or (isinstance(spec, (list, str)) and len(spec) == 0):
        raise AttnlabError(f"{method} needs {what}: give the text to act on (on the command line: --emphasize TEXT or <<TEXT>> in the prompt)")
    return spec
