"""Modules that are also their main function: ``attnlab.steer``, ``attnlab.profile``, ``attnlab.collect``.

``attnlab.steer`` is the package of steering methods (``attnlab.steer.selection``, ``attnlab.steer.pasta``, ...)
and ``with attnlab.steer(model, ...)`` applies them; ``attnlab.profile`` and ``attnlab.collect`` are modules
and ``attnlab.profile(...)`` / ``attnlab.collect(...)`` run them. The package therefore never rebinds those
names to functions (which would hide the modules): each module makes itself callable with
:func:`make_callable`, and calling it calls its function of the same name.
"""
from __future__ import annotations

import sys
import types


class CallableModule(types.ModuleType):
    """A module that, called, calls its function named like itself (``attnlab.profile(...)`` is
    ``attnlab.profile.profile(...)``)."""

    def __call__(self, *args, **kwargs):
        """Call the module's main function with these arguments."""
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Make the (imported) module ``module_name`` a :class:`CallableModule`; call it at the end of the module."""
    sys.modules[module_name].__class__ = CallableModule
