"""TokenContext: which tokens of a batch are real, where the prompt ends, and the named spans in it."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from attnlab.errors import AttnlabError, AttnlabWarning


def first_real_index(valid: torch.Tensor) -> torch.Tensor:
    """``[B]``: the position of each row's first real token (after left padding), from ``valid [B, P]``."""
    return valid.int().argmax(dim=1)


def first_token_mask(valid: torch.Tensor) -> torch.Tensor:
    """``[B, P]`` bool: True at each row's first real token (the attention sink of StreamingLLM and ZeroTuning)."""
    mask = torch.zeros_like(valid, dtype=torch.bool)
    mask[torch.arange(valid.shape[0]), first_real_index(valid)] = True
    return mask


@dataclass
class TokenContext:
    """The prompt of the forward (or generation) in flight: real tokens, named spans, padded length.

    ``valid`` and every ``spans[name]`` are ``[B, P]`` bool over the padded prompt (left padding puts the
    first real token of row ``b`` at ``first[b] > 0``); keys and queries at positions ``>= P`` are
    generated, and real.

    ``cache`` is the KV cache of the generation, if any. With an evicting cache (a
    :class:`attnlab.cache.SinkCache`) key ``j`` of a layer is the text token ``cache.key_positions(layer)[:, j]``
    once it has evicted; with transformers' own cache, a sliding-window layer (Mistral, Gemma 3's local layers)
    keeps only its last keys once the sequence passes its window. :meth:`key_positions` says where a layer's
    keys sit in either case, and :meth:`remap` gives the view of this context the steering and the probes of
    that layer must use. ``evicted`` counts, per span name, the span's tokens an evicting cache no longer holds
    (the most over layers and rows); a sliding window is not an eviction (the model never sees past it).
    """

    valid: torch.Tensor
    spans: dict[str, torch.Tensor] = field(default_factory=dict)
    cache: object = field(default=None, repr=False)
    evicted: dict[str, int] = field(default_factory=dict)

    @property
    def evicting(self) -> bool:
        """Whether the generation's cache evicts tokens by a policy (a SinkCache), not only by a sliding window."""
        return hasattr(self.cache, "key_positions")

    def key_positions(self, layer: int, k_len: int) -> torch.Tensor | None:
        """``[B, K]`` original positions of ``layer``'s ``k_len`` keys when the cache re-indexed them, else None.

        An evicting cache says so itself; a transformers sliding-window cache layer keeps the most recent keys of
        the ``cumulative_length`` tokens seen, so its keys are the last ``k_len`` positions.
        """
        if self.cache is None:
            return None
        if self.evicting:
            return self.cache.key_positions(layer)
        layers = getattr(self.cache, "layers", None)
        seen = getattr(layers[layer], "cumulative_length", None) if layers and layer < len(layers) else None
        if seen is None or int(seen) <= k_len:
            return None
        return torch.arange(int(seen) - k_len, int(seen)).expand(self.valid.shape[0], -1)

    def remap(self, positions: torch.Tensor) -> "KeyMappedContext":
        """This context for keys at original ``positions [B, K]``; records (and warns about) evicted spans."""
        if self.evicting:
            self._note_evictions(positions)
        return KeyMappedContext(self, positions)

    def _note_evictions(self, positions: torch.Tensor) -> None:
        p = self.prompt_length
        inside = positions < p
        at = positions.clamp(max=p - 1).cpu()
        for name, mask in self.spans.items():
            kept = (mask.gather(1, at) & inside.cpu()).sum(1)
            lost = int((mask.sum(1) - kept).max())
            if lost > self.evicted.get(name, 0):
                if name not in self.evicted:
                    warnings.warn(f"steered span '{name}' lost {lost} of {int(mask.sum(1).max())} tokens to the "
                                  "cache's eviction; its steering now acts on the tokens still cached "
                                  "(see Steering.evicted_spans)", AttnlabWarning, stacklevel=2)
                self.evicted[name] = lost

    @property
    def prompt_length(self) -> int:
        return self.valid.shape[1]

    @property
    def first(self) -> torch.Tensor:
        """``[B]``: where each row's first real token sits."""
        return first_real_index(self.valid)

    def _extend(self, mask: torch.Tensor, length: int, fill: bool) -> torch.Tensor:
        p = self.prompt_length
        if length <= p:
            return mask[:, :length]
        return torch.cat([mask, torch.full((mask.shape[0], length - p), fill, dtype=torch.bool)], dim=1)

    def valid_keys(self, k_len: int) -> torch.Tensor:
        """``[B, K]``: real (non-padding) keys among the first ``k_len`` positions."""
        return self._extend(self.valid, k_len, True)

    def span(self, name: str) -> torch.Tensor:
        if name not in self.spans:
            raise AttnlabError(f"no span named '{name}' in this steering block: name it in the method's spans")
        return self.spans[name]

    def key_mask(self, selector, k_len: int) -> torch.Tensor:
        """``[B, K]`` bool: the keys ``selector`` picks among ``k_len`` keys (prompt part cached per selector)."""
        cache = self.__dict__.setdefault("_key_masks", {})
        if selector not in cache:
            parts = selector.split("&") if isinstance(selector, str) else [selector]
            prompt_part = self._prompt_key_mask(parts[0])
            for part in parts[1:]:
                prompt_part = prompt_part & self._prompt_key_mask(part)
            cache[selector] = (prompt_part, all(part == "generated" for part in parts))
        prompt_part, fill = cache[selector]
        return self._extend(prompt_part, k_len, fill)

    def _prompt_key_mask(self, selector) -> torch.Tensor:
        """``[B, P]``: the prompt keys ``selector`` picks."""
        b, p = self.valid.shape
        if selector == "prompt":
            return self.valid
        if selector == "generated":
            return torch.zeros(b, p, dtype=torch.bool)
        if selector == "first":
            return first_token_mask(self.valid)
        if isinstance(selector, tuple):
            mask = torch.zeros(b, p, dtype=torch.bool)
            n_real = self.valid.sum(1)
            for i in selector:
                if (i >= n_real).any():
                    raise AttnlabError(f"key index {i} is past the end of a prompt of {int(n_real.min())} tokens")
                mask[torch.arange(b), self.first + i] = True
            return mask
        if selector.startswith("~"):
            return self.valid & ~self._prompt_key_mask(selector[1:])
        return self.span(selector[5:])

    def query_mask(self, selector, q_len: int, k_len: int) -> torch.Tensor:
        """``[B, Q]`` bool for the last ``q_len`` of ``k_len`` positions."""
        b = self.valid.shape[0]
        if selector == "all":
            return torch.ones(b, q_len, dtype=torch.bool)
        if selector == "prompt":
            full = self._extend(torch.ones(b, self.prompt_length, dtype=torch.bool), k_len, False)
        elif selector == "generated":
            full = self._extend(torch.zeros(b, self.prompt_length, dtype=torch.bool), k_len, True)
        else:
            full = self._extend(self.span(selector[5:]), k_len, False)
        return full[:, k_len - q_len:]


class KeyMappedContext:
    """A :class:`TokenContext` seen through an evicting cache: key ``j`` is text position ``positions[:, j]``.

    Every mask is built over the original positions ``0 .. max(positions)`` by the base context and then
    gathered at the kept positions, so a span's bias lands on the span's tokens still in the cache and on
    nothing else; query masks use the positions of the last ``q_len`` keys (the tokens of this forward).
    """

    def __init__(self, base: TokenContext, positions: torch.Tensor) -> None:
        self.base, self.positions = base, positions.cpu()
        self.length = int(self.positions.max()) + 1
        self.valid = base.valid
        self.spans = base.spans

    @property
    def prompt_length(self) -> int:
        return self.base.prompt_length

    def _gather(self, full: torch.Tensor, k_len: int) -> torch.Tensor:
        if k_len != self.positions.shape[1]:
            raise AttnlabError(f"the attention sees {k_len} keys but the cache maps {self.positions.shape[1]}: pass "
                               "the same cache as past_key_values to every forward of the steered generation")
        return full.gather(1, self.positions.expand(full.shape[0], -1))

    def valid_keys(self, k_len: int) -> torch.Tensor:
        return self._gather(self.base.valid_keys(self.length), k_len)

    def span(self, name: str) -> torch.Tensor:
        return self.base.span(name)

    def key_mask(self, selector, k_len: int) -> torch.Tensor:
        return self._gather(self.base.key_mask(selector, self.length), k_len)

    def query_mask(self, selector, q_len: int, k_len: int) -> torch.Tensor:
        full = self.base.query_mask(selector, self.length, self.length)
        return self._gather(full, k_len)[:, k_len - q_len:]
