"""attnlab: see, measure and steer where a transformer's attention goes -- training-free, on any
Hugging Face ``transformers`` model whose attention goes through ``AttentionInterface``.

``attnlab.steer``, ``attnlab.profile``, ``attnlab.collect`` and ``attnlab.flow`` are modules that can be called as
their main function (:mod:`attnlab.callable_module`): ``with attnlab.steer(model, ...)`` and
``attnlab.profile(...)`` work, and so does ``attnlab.steer.selection``. ``attnlab.heads`` (head roles, ablation,
importance) and ``attnlab.lookback`` (the Lookback Lens) are packages.
"""
from attnlab import collect, flow, heads, lookback, profile, steer
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
           "TokenContext", "collect", "flow", "heads", "load", "lookback", "profile", "__version__"]

