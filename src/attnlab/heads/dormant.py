"""Dormant heads (Guo, Pai, Bai, Jiao, Jordan, Mei 2024, "Active-Dormant Attention Heads: Mechanistically
Demystifying Extreme-Token Phenomena in LLMs").

A head is dormant on an input when it dumps its attention on the sink (the first token) *and* writes almost
nothing to the residual stream. Per head and text:

* first-token mass ``m`` = :class:`attnlab.probes.attention.FirstTokenMass` (mean attention on the first real
  token over the real queries after it);
* output norm ``N = mean_i || o_i ||`` with ``o_i = (sum_j A[i, j] v_j) W_O^h`` the head's slice of the
  attention output projection applied to its output (bias left out), over the same queries; the *relative*
  output norm is ``N / mean_{h'} N^{l, h'}``, the head's norm over its layer's mean;
* dormant on the text iff ``m >= sink`` and relative norm ``<= norm`` (defaults 0.5 and 0.5, attnlab's choice:
  the paper gives no numeric threshold; Sandoval-Segura et al. 2025 recommend head-output norms, layer
  normalised, over first-token weight alone).

The score is the share of the texts on which the head is dormant (Guo et al. stress that dormancy depends on
the input). ``o`` is read by a forward pre-hook on the output projection (the seam's probes see attention
probabilities, not values); the attention itself is the seam's.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from attnlab.context import first_token_mask
from attnlab.errors import AttnlabError
from attnlab.probes.massive import layer_modules

DORMANT_SINK = 0.5
DORMANT_NORM = 0.5
OUTPUT_PROJECTIONS = ("self_attn.o_proj", "attn.c_proj", "attention.output.dense", "self_attn.out_proj",
                      "self_attn.dense", "attn.out_proj")


def output_projections(base) -> list[torch.nn.Module]:
    """Each layer's attention output projection (``o_proj``, GPT-2's ``attn.c_proj``, BERT's
    ``attention.output.dense``, ...), in layer order; a one-line error when a layer has none of them."""
    found = []
    for idx, layer in enumerate(layer_modules(base)):
        named = dict(layer.named_modules())
        proj = next((named[n] for n in OUTPUT_PROJECTIONS if n in named), None)
        if proj is None or not hasattr(proj, "weight"):
            raise AttnlabError(f"cannot find layer {idx}'s attention output projection (looked for "
                               f"{', '.join(OUTPUT_PROJECTIONS)}): dormant heads need it")
        found.append(proj)
    return found


def _input_by_output(proj) -> torch.Tensor:
    """The projection as an ``[in, out]`` matrix (``nn.Linear`` stores ``[out, in]``, GPT-2's Conv1D ``[in, out]``)."""
    return proj.weight.T if isinstance(proj, torch.nn.Linear) else proj.weight


@contextmanager
def head_output_norms(base, n_heads: int, valid: torch.Tensor):
    """Yield ``{layer: [B, H]}``, filled during the forward: each head's mean ``||o_i||`` over the real queries
    after the first real token (``valid [B, T]``)."""
    weight = valid & ~first_token_mask(valid)                                                   # [B, T]
    count = weight.float().sum(-1).clamp(min=1)
    found: dict[int, torch.Tensor] = {}
    handles = []
    for idx, proj in enumerate(output_projections(base)):
        def hook(module, args, idx=idx):
            x = args[0].float()                                                                 # [B, T, H * D]
            w = _input_by_output(module).float()                                                # [H * D, d]
            d = x.shape[-1] // n_heads
            norms = torch.stack([(x[..., h * d:(h + 1) * d] @ w[h * d:(h + 1) * d]).norm(dim=-1)
                                 for h in range(n_heads)], dim=1)                               # [B, H, T]
            w_rows = weight.to(norms.device).float()[:, None]
            found[idx] = ((norms * w_rows).sum(-1) / count.to(norms.device)[:, None]).cpu()
        handles.append(proj.register_forward_pre_hook(hook))
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def relative_norm(norms: torch.Tensor) -> torch.Tensor:
    """``[..., L, H]`` output norms over their layer's mean over heads."""
    return norms / norms.mean(-1, keepdim=True).clamp(min=1e-12)


def dormant_share(first_token_mass: torch.Tensor, rel_norm: torch.Tensor, sink: float = DORMANT_SINK,
                  norm: float = DORMANT_NORM) -> torch.Tensor:
    """``[L, H]`` share of texts on which each head is dormant (Guo et al. 2024): from per-text ``[N, L, H]``
    first-token mass ``>= sink`` and relative output norm ``<= norm``."""
    return ((first_token_mass >= sink) & (rel_norm <= norm)).float().mean(0)
