"""TokenContext: which tokens of a batch are real, where the prompt ends, and the named spans in it."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attnlab.errors import AttnlabError


@dataclass
class TokenContext:
    """The prompt of the forward (or generation) in flight: real tokens, named spans, padded length.

    ``valid`` and every ``spans[name]`` are ``[B, P]`` bool over the padded prompt (left padding puts the
    first real token of row ``b`` at ``first[b] > 0``); keys and queries at positions ``>= P`` are
    generated, and real.
    """

    valid: torch.Tensor
    spans: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def prompt_length(self) -> int:
        return self.valid.shape[1]

    @property
    def first(self) -> torch.Tensor:
        return self.valid.int().argmax(dim=1)

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
            cache[selector] = (self._prompt_key_mask(selector), selector == "generated")
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
            mask = torch.zeros(b, p, dtype=torch.bool)
            mask[torch.arange(b), self.first] = True
            return mask
        if isinstance(selector, tuple):
            mask = torch.zeros(b, p, dtype=torch.bool)
            n_real = self.valid.sum(1)
            for i in selector:
                if (i >= n_real).any():
                    raise AttnlabError(f"key index {i} is past the end of a prompt of {int(n_real.min())} tokens")
                mask[torch.arange(b), self.first + i] = True
            return mask
        if selector.startswith("~span:"):
            return self.valid & ~self.span(selector[6:])
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
