"""attnlab: see, measure and steer where a transformer's attention goes -- training-free, on any
Hugging Face ``transformers`` model whose attention goes through ``AttentionInterface``.

``attnlab.steer``, ``attnlab.profile`` and ``attnlab.collect`` are modules that can be called as their main
function (:mod:`attnlab.callable_module`): ``with attnlab.steer(model, ...)`` and ``attnlab.profile(...)``
work, and so does ``attnlab.steer.selection``.
"""
from attnlab import collect, flow, profile, steer
from attnlab.context import TokenContext
from attnlab.edits import Edit
from attnlab.errors import AttnlabError
from attnlab.models.config import ModelShape
from attnlab.models.loading import load
from attnlab.plan import Plan
from attnlab.profile import sample_text as profile_sample_text
from attnlab.spans import HeadSet, SpanInputs, Spans
from attnlab.steer import ACT, PASTA, HeadScale, InstABoost, SpotLight, Temperature, ZeroTuning

__version__ = "0.1.0"
__all__ = ["ACT", "PASTA", "HeadScale", "InstABoost", "SpotLight", "Temperature", "ZeroTuning", "steer", "Edit",
           "Spans", "SpanInputs", "ModelShape", "profile_sample_text", "AttnlabError", "HeadSet", "Plan",
           "TokenContext", "collect", "flow", "load", "profile", "__version__"]

