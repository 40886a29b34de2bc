"""The JSON schema of an attnlab profile report (pydantic models; ``Report.model_json_schema()``)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    """The model a report was made on, and how attnlab ran it."""
    name: str = Field(description="alias, folder or hub id the model was loaded from, or its class name")
    architecture: str
    revision: str | None = Field(description="hub commit hash, or sha256 of the weights for a local folder")
    dtype: str
    attention_backend: str = Field(description="attention implementation used while probing")
    n_layers: int
    n_heads: int


class HiddenSink(BaseModel):
    """One of ACT's hidden sinks: a key other than the first that a head attends to strongly."""
    layer: int
    head: int
    token: int
    token_text: str
    score: float


class MassiveActivation(BaseModel):
    """One large hidden-state value (Sun et al.): its value, token and channel."""
    value: float
    token: int
    dim: int


class LayerActivations(BaseModel):
    """A layer's hidden-state magnitudes: the median, the largest values and the massive ones."""
    layer: int
    median: float
    top: list[MassiveActivation]
    massive: list[MassiveActivation]


class TextReport(BaseModel):
    """Everything measured on one text."""
    sha256: str = Field(description="sha256 of the UTF-8 text")
    n_tokens: int
    first_token: str
    bos_used: bool = Field(description="whether the first token is the tokenizer's BOS / CLS token")
    preview: str
    first_token_mass: list[list[float]] = Field(description="[layer][head] mean attention on the first token")
    first_token_received: list[list[float]] = Field(description="[layer][head] Gu et al.'s alpha(first)")
    entropy: list[list[float]] = Field(description="[layer][head] mean attention entropy in nats")
    span_mass: dict[str, list[list[float]]] = Field(default_factory=dict)
    sink_ratio_by_layer: list[float]
    sink_ratio: float = Field(description="Sink_1^eps of Gu et al. in percent")
    hidden_sinks: list[HiddenSink]
    activations: list[LayerActivations] = Field(default_factory=list)


class Summary(BaseModel):
    """The figures of all texts together (means over texts)."""
    first_token_mass: list[list[float]] = Field(description="[layer][head], mean over texts")
    entropy: list[list[float]]
    span_mass: dict[str, list[list[float]]] = Field(default_factory=dict)
    sink_ratio_by_layer: list[float]
    sink_ratio: float
    heads_with_sink: int = Field(description="heads whose mean first-token mass is >= epsilon")
    heads_with_sink_beyond_layer0: int


class Report(BaseModel):
    """Everything ``attnlab profile`` measured, with provenance."""

    attnlab_version: str
    model: ModelInfo
    settings: dict
    summary: Summary
    texts: list[TextReport]

    def _repr_html_(self) -> str:
        """In Jupyter, the report shows itself as the viewer's head grid (a sandboxed, self-contained page)."""
        from attnlab.serve.export import profile_snapshot

        return profile_snapshot(self)._repr_html_()
