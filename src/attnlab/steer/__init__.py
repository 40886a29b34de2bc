"""Training-free attention steering: each published method is a small module that builds Edits.

This package is also callable: ``with attnlab.steer(model, *methods):`` is :func:`attnlab.steer.session.steer`
(see :mod:`attnlab.callable_module`), so ``attnlab.steer.selection`` and the other modules stay reachable.
"""
from attnlab.callable_module import make_callable
from attnlab.steer import selection
from attnlab.steer.act import ACT
from attnlab.steer.base import Method
from attnlab.steer.heads import HeadScale, Temperature
from attnlab.steer.instaboost import InstABoost
from attnlab.steer.pasta import PASTA, load_head_config, save_head_config
from attnlab.steer.session import steer
from attnlab.steer.spotlight import SpotLight
from attnlab.steer.zerotuning import ZeroTuning

__all__ = ["ACT", "HeadScale", "InstABoost", "Method", "PASTA", "SpotLight", "Temperature", "ZeroTuning",
           "load_head_config", "save_head_config", "selection", "steer"]

make_callable(__name__)
