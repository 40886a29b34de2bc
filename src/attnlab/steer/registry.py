"""The steering methods by name, with their declared settings: one place for the CLI, the harness and forms.

Each :class:`~attnlab.steer.base.Method` declares its ``name`` (the CLI's spelling), the span it acts
on and its settings as :class:`~attnlab.steer.base.Param` records; this module collects them.
:func:`parse_settings` reads ``NAME=VALUE`` settings and refuses unknown names, bad values and values
out of range in one line naming the method's settings; :func:`build` makes the method;
:func:`describe` gives everything a form needs as JSON data.
"""
from __future__ import annotations

from attnlab.errors import AttnlabError
from attnlab.steer.act import ACT
from attnlab.steer.base import Method, Param
from attnlab.steer.heads import HeadScale, Temperature
from attnlab.steer.instaboost import InstABoost
from attnlab.steer.pasta import PASTA
from attnlab.steer.spotlight import SpotLight
from attnlab.steer.zerotuning import ZeroTuning

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in
                                    (PASTA, ACT, ZeroTuning, InstABoost, SpotLight, HeadScale, Temperature)}


def method_class(name: str) -> type[Method]:
    """The method registered as ``name``."""
    if name not in METHODS:
        raise AttnlabError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]


def settings_text(name: str) -> str:
    """The settings of method ``name`` in words, for messages: ``heads, alpha, mode (choosing heads: also top_k)``."""
    cls = method_class(name)
    text = ", ".join(p.name for p in cls.params) or "none"
    chosen = [f"choosing {s}: also {', '.join(p.name for p in opts)}" for s, opts in cls.selectable.items() if opts]
    return text + (f" ({'; '.join(chosen)})" if chosen else "")


def check_select(name: str, select: str | None) -> None:
    """Refuse an unknown method, and choosing ``select`` from data for a method that cannot."""
    cls = method_class(name)
    if select is not None and select not in cls.selectable:
        can = ", ".join(cls.selectable) or "nothing"
        raise AttnlabError(f"{name} has no setting {select!r} to choose from data: it can choose {can}")


def setting(name: str, key: str, select: str | None = None) -> Param:
    """The declared setting ``key`` of method ``name`` (an option of the choice ``select`` included)."""
    check_select(name, select)
    cls = method_class(name)
    for p in cls.params + (cls.selectable[select] if select else ()):
        if p.name == key:
            if key == select:
                raise AttnlabError(f"{name}: {key} is chosen from data (select {key}): do not set it too")
            return p
    raise AttnlabError(f"{name} has no setting {key!r}: its settings are {settings_text(name)}")


def parse_settings(name: str, written: dict[str, str], select: str | None = None) -> dict:
    """``{"alpha": "0.05"}`` as written (command line, form) -> ``{"alpha": 0.05}``, every value checked."""
    check_select(name, select)
    return {key: setting(name, key, select).parse(text, name) for key, text in written.items()}


def check_settings(name: str, values: dict, select: str | None = None) -> dict:
    """Python values (``{"alpha": 0.05, "heads": [(1, 0)]}``) checked against the declared settings."""
    check_select(name, select)
    return {key: setting(name, key, select).check(value, name) for key, value in values.items()}


def split_settings(name: str, values: dict) -> tuple[dict, dict]:
    """``(method settings, options of the choice from data)`` of already-checked ``values``."""
    own = {p.name for p in method_class(name).params}
    return {k: v for k, v in values.items() if k in own}, {k: v for k, v in values.items() if k not in own}


def choice_options(name: str, select: str, values: dict) -> dict:
    """The options of choosing ``select`` for method ``name``: given ``values`` over the declared defaults."""
    check_select(name, select)
    return {p.name: values.get(p.name, p.default) for p in method_class(name).selectable[select]}


def build(name: str, settings: dict | None = None, spans=None) -> Method:
    """Method ``name`` with ``settings`` (the rest at their defaults) acting on ``spans`` where it takes a span."""
    cls = method_class(name)
    settings, _ = split_settings(name, check_settings(name, settings or {}))
    missing = [p for p in cls.params if p.required and p.name not in settings]
    if missing:
        raise AttnlabError(f"{name} needs {missing[0].name}: {missing[0].help}")
    return cls(spans, **settings) if cls.span else cls(**settings)


def describe(name: str) -> dict:
    """Method ``name`` as plain JSON data: its span, its settings (type, default, range, help) and what it can
    choose from data, with that choice's options."""
    cls = method_class(name)
    return {"name": name, "class": cls.__name__, "summary": (cls.__doc__ or "").strip().splitlines()[0],
            "span": cls.span, "params": [p.describe() for p in cls.params],
            "selectable": {s: [p.describe() for p in opts] for s, opts in cls.selectable.items()}}
