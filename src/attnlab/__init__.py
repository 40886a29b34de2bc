"""attnlab: see, measure and steer where a transformer's attention goes -- training-free, on any
Hugging Face ``transformers`` model whose attention goes through ``AttentionInterface``."""
from attnlab.collect import ModelShape, collect
from attnlab.errors import AttnlabError
from attnlab.models.loading import load
from attnlab.context import TokenContext
from attnlab.edits import Edit
from attnlab.plan import Plan
from attnlab.profile import profile
from attnlab.profile import sample_text as profile_sample_text
from attnlab.spans import HeadSet, Spans, SpanInputs
from attnlab.steer import ACT, PASTA, HeadScale, InstABoost, SpotLight, Temperature, ZeroTuning, steer

__version__ = "0.1.0"
__all__ = ["ACT", "PASTA", "HeadScale", "InstABoost", "SpotLight", "Temperature", "ZeroTuning", "steer", "Edit", "Spans", "SpanInputs", "ModelShape", "profile_sample_text", "collect_shape", "AttnlabError", "HeadSet", "Plan", "TokenContext", "collect", "load", "profile", "__version__"]


def collect_shape(model) -> tuple[int, int]:
    """``(n_layers, n_heads)`` of a loaded model, for :meth:`HeadSet.parse`."""
    shape = ModelShape.of(model)
    return shape.n_layers, shape.n_heads
