"""The base of every steering method: a small object that declares its settings, names its spans and builds Edits."""
from __future__ import annotations

import math
from dataclasses import dataclass

from attnlab.errors import AttnlabError

@dataclass(frozen=True)
class Param:
    """One setting of a method, as the CLI, the evaluation harness and forms show it.

    ``type`` is ``float``, ``int``, ``text`` (one of ``choices``), ``heads`` (``all``, ``L3``, ``L3H1,L5H0-7``,
    a PASTA head JSON, or in Python a head set) or ``grid`` (numbers to try). Numbers must lie strictly
    between ``above`` and ``below`` where those are given; ``required`` settings have no default.
    """

    name: str
    type: str
    default: object
    help: str
    above: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False

    def range_text(self) -> str:
        """``in (0, 1)``, ``> 0``, ``one of a, b`` or ``""``: what values are allowed, in words."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.above is not None and self.below is not None:
            return f"in ({self.above:g}, {self.below:g})"
        if self.above is not None:
            return f"> {self.above:g}"
        return f"< {self.below:g}" if self.below is not None else ""

    def check(self, value, owner: str):
        """``value`` as the method stores it, or a one-line :class:`AttnlabError` naming ``owner`` (the method)."""
        if self.type == "heads":
            return value
        if self.type == "text":
            if value not in self.choices:
                raise AttnlabError(f"{owner}: unknown {self.name} {value!r}: use one of {', '.join(self.choices)}")
            return value
        if self.type == "grid":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not list(value):
                raise AttnlabError(f"{owner}: {self.name} must be a non-empty list of numbers, got {value!r}")
            return [self._number(v, owner) for v in value]
        return self._number(value, owner)

    def _number(self, value, owner: str):
        whole = self.type == "int"
        ok = (isinstance(value, int) if whole else isinstance(value, (int, float))) and not isinstance(value, bool) \
            and math.isfinite(value)
        if ok and (self.above is None or value > self.above) and (self.below is None or value < self.below):
            return int(value) if whole else float(value)
        if self.above is not None and self.below is not None:
            want = self.range_text()
        elif self.above == 0:
            want = "a positive integer" if whole else "a positive number"
        else:
            want = ("an integer" if whole else "a finite number") + (f" {self.range_text()}" if self.range_text() else "")
        raise AttnlabError(f"{owner}: {self.name} must be {want}, got {value!r}")

    def parse(self, text: str, owner: str):
        """A value written on the command line (``0.01``, ``L3H1``, ``0.5,1,2``), checked."""
        text = text.strip()
        if self.type in ("heads", "text"):
            if not text:
                raise AttnlabError(f"{owner}: {self.name} is empty: give {self.help_example()}")
            return self.check(text, owner)
        pieces = [p.strip() for p in text.split(",")] if self.type == "grid" else [text]
        convert = int if self.type == "int" else float
        try:
            values = [convert(p) for p in pieces]
        except ValueError:
            want = "a list of numbers like 0.5,1,2" if self.type == "grid" else \
                ("an integer" if self.type == "int" else "a number") + (f" {self.range_text()}" if self.range_text() else "")
            raise AttnlabError(f"{owner}: {self.name} must be {want}, got {text!r}") from None
        return self.check(values if self.type == "grid" else values[0], owner)

    def help_example(self) -> str:
        """What to write, for messages: the allowed range or an example."""
        return {"heads": "heads like all, L3 or L3H1,L5H0-7"}.get(self.type) or self.range_text() or "a value"

    def describe(self) -> dict:
        """The setting as plain JSON data (for forms and reports)."""
        return {"name": self.name, "type": self.type, "default": None if self.required else
                (list(self.default) if isinstance(self.default, tuple) else self.default), "help": self.help,
                "above": self.above, "below": self.below, "choices": list(self.choices), "required": self.required}


class Method:
    """A published steering method. Subclasses declare ``name``, ``span``, ``params`` and implement :meth:`build`.

    ``name`` is the registry key (the CLI's spelling); ``span`` the span it acts on (``"emphasis"``,
    ``"instruction"`` or None) -- a method with a span takes that span's text as its first argument;
    ``params`` the settings its constructor takes by keyword, with the same defaults; ``selectable`` maps
    each setting that can be chosen from data to the options of that choice.
    ``build(n_layers, n_heads)`` returns ``(edits, dynamic_edits)``; ``spans()`` maps each span name the
    edits use to what the user gave (text, character ranges, per-prompt lists or ``SpanInputs``).
    """

    name = "method"
    span: str | None = None
    params: tuple[Param, ...] = ()
    selectable: dict[str, tuple[Param, ...]] = {}

    @classmethod
    def param(cls, name: str) -> Param:
        """The declared setting ``name``."""
        for p in cls.params:
            if p.name == name:
                return p
        raise AttnlabError(f"{cls.name} has no setting '{name}': its settings are "
                           f"{', '.join(p.name for p in cls.params) or 'none'}")

    def checked(self, name: str, value):
        """``value`` checked against the declared setting ``name`` (one line naming the method if it is wrong)."""
        return self.param(name).check(value, type(self).__name__)

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


def require_spans(spec, method: str, what: str):
    """``spec`` if it names some text, else a one-line error saying how to give it."""
    if spec is None or (isinstance(spec, (list, str)) and len(spec) == 0):
        raise AttnlabError(f"{method} needs {what}: give the text to act on (on the command line: --emphasize TEXT or <<TEXT>> in the prompt)")
    return spec
