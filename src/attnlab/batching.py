"""Padding token rows into a batch, and the position ids that go with it."""
from __future__ import annotations

import torch


def pad_rows(rows: list[list[int]], pad_id: int | None, *, left: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of shape ``[B, max len]``; left padding for causal prompts by default."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        sl = slice(width - len(row), width) if left else slice(0, len(row))
        ids[b, sl] = torch.tensor(row, dtype=torch.long)
        mask[b, sl] = 1
    return ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting real tokens only, so left padding shifts neither absolute embeddings nor RoPE."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
