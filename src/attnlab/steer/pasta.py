"""PASTA -- Zhang et al., "Tell Your Model Where to Attend: Post-hoc Attention Steering for LLMs" (ICLR 2024).

For the steered heads, attention on the prompt tokens *outside* the emphasised spans is multiplied by
``alpha`` (0.01) and rows renormalised (paper Eq. 2) -- exactly a logit bias ``log alpha`` on those keys.
All queries are steered (prompt and generated); keys generated after the prompt are never biased.

Modes (``scale_position`` in the official code):

* ``exclude`` (default, all paper experiments): ``log alpha`` on real prompt keys outside the spans. The
  first token (the attention sink) is outside, so it is down-weighted too, as in the official code.
* ``include``: ``log(1/alpha)`` on the span keys. Within the prompt this is the same reweighting as
  ``exclude``; relative to generated tokens the spans gain instead of the rest losing. **Differs from
  the official code**, whose ``include`` adds ``+log alpha`` on the span and ``-log alpha`` on the prompt,
  so that the paper's alpha = 0.01 *down*-weights the span (a footgun); here alpha in (0, 1) always
  emphasises.
* ``generation``: ``log alpha`` on all prompt keys (generated tokens relatively emphasised).

``sink="keep"`` (**not in the paper**; the default ``"steer"`` is the paper's) leaves the first real token
(the attention sink, which carries most of many heads' attention) out of the down-weighting in ``exclude`` and
``generation`` modes: it gets no bias while the rest of the prompt outside the spans gets ``log alpha``. It
tests whether PASTA's effect comes from the emphasis or from moving the sink's mass. ``include`` never biases
the sink, so there ``keep`` changes nothing.

Several spans are one emphasised set (their union): a key outside all of them gets ``log alpha`` once.
**Differs from the official code**, which adds ``log alpha`` once per section, so with k sections the
emphasised text is also down-weighted by ``alpha^(k-1)`` relative to generated tokens.

Head configs: PASTA's JSON ``{"layer": [heads]}`` is read and written by :func:`load_head_config` /
:func:`save_head_config`; :mod:`attnlab.steer.selection` profiles heads (paper Alg. 1).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from attnlab.edits import Edit
from attnlab.errors import AttnlabError
from attnlab.steer.base import Method, Param, require_spans

MODES = ("exclude", "include", "generation")
SINK_CHOICES = ("steer", "keep")


class PASTA(Method):
    """Emphasise spans of the prompt on selected heads (defaults: alpha = 0.01, ``exclude``)."""

    name = "pasta"
    span = "emphasis"
    params = (Param("heads", "heads", "all", "heads to steer: all, L3, L3H1,L5H0-7, or a PASTA head JSON"),
              Param("alpha", "float", 0.01, "factor on the attention outside the emphasised text", above=0, below=1),
              Param("mode", "text", "exclude", "exclude: down-weight the rest of the prompt; include: boost the "
                    "span; generation: down-weight the whole prompt", choices=MODES),
              Param("sink", "text", "steer", "steer: the first token is down-weighted like the rest of the prompt "
                    "(the paper); keep: it is left as it is (not in the paper)", choices=SINK_CHOICES))
    selectable = {"heads": (Param("top_k", "int", 4, "keep at most this many of the best-ranked heads", above=0),
                            Param("layers", "int", 0, "coarse-to-fine: rank whole layers first, then try single "
                                  "heads of the best this many layers only (0: try every head)", above=-1))}

    def __init__(self, emphasize=None, heads="all", alpha: float = 0.01, mode: str = "exclude", sink: str = "steer",
                 *, spans=None):
        self.emphasize = require_spans(emphasize if emphasize is not None else spans, "PASTA", "spans to emphasise")
        self.alpha = self.checked("alpha", alpha)
        self.mode = self.checked("mode", mode)
        self.sink = self.checked("sink", sink)
        self.heads = load_head_config(heads) if isinstance(heads, (str, Path)) and str(heads).endswith(".json") \
            else heads

    def spans(self) -> dict:
        return {"emphasis": self.emphasize}

    def build(self, n_layers: int, n_heads: int):
        log_alpha = math.log(self.alpha)
        spare = "&~first" if self.sink == "keep" else ""                  # the sink left out of the down-weighting
        if self.mode == "exclude":
            edit = Edit(heads=self.heads, keys="~span:emphasis" + spare, queries="all", bias=log_alpha)
        elif self.mode == "include":
            edit = Edit(heads=self.heads, keys="span:emphasis", queries="all", bias=-log_alpha)
        else:
            edit = Edit(heads=self.heads, keys="prompt" + spare, queries="all", bias=log_alpha)
        return [edit], []

    def hyperparameters(self) -> dict:
        heads = json.dumps(self.heads) if isinstance(self.heads, dict) else str(self.heads)
        return {"alpha": self.alpha, "mode": self.mode, "sink": self.sink, "heads": heads}


def load_head_config(path) -> dict:
    """Read a PASTA head config (``{"layer": [head, …]}``, JSON) into ``{int: [int]}``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise AttnlabError(f"head config {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise AttnlabError(f"head config {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise AttnlabError(f"head config {path} must map layer numbers to lists of heads, like {{\"3\": [0, 5]}}")
    return {int(layer): sorted(int(h) for h in heads) for layer, heads in raw.items() if heads}


def save_head_config(heads, path, *, overwrite: bool = False) -> Path:
    """Write ``{(layer, head)}`` (or a dict) as PASTA's JSON head config; never overwrites unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise AttnlabError(f"{path} already exists: choose another path or pass overwrite=True")
    if not isinstance(heads, dict):
        by_layer: dict[int, list[int]] = {}
        for layer, head in heads:
            by_layer.setdefault(int(layer), []).append(int(head))
        heads = by_layer
    path.write_text(json.dumps({str(l): sorted(hs) for l, hs in sorted(heads.items())}, indent=1))
    return path
