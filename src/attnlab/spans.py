"""Spans (named token ranges found from text, never counted by hand) and HeadSets (``"L3H1,L5H0-7"``)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from attnlab.errors import AttnlabError


def char_range(text: str, span, where: str = "the text") -> tuple[int, int]:
    """Resolve a span given as a substring (first occurrence) or a ``(start, end)`` character range."""
    if isinstance(span, tuple):
        start, end = span
        if not (0 <= start < end <= len(text)):
            raise AttnlabError(f"character range {span} is outside {where} (length {len(text)}) or empty")
        return start, end
    if not isinstance(span, str) or not span.strip():
        raise AttnlabError("a span must be a non-empty piece of the text or a (start, end) character range")
    start = text.find(span)
    if start < 0:
        short = span if len(span) <= 60 else span[:57] + "..."
        raise AttnlabError(f"span '{short}' is not in {where}: give a piece of the text exactly as written")
    return start, start + len(span)


def token_range(offsets: list[tuple[int, int]], start: int, end: int, what: str = "span") -> tuple[int, int]:
    """Tokens ``[a, b)`` whose character offsets overlap ``[start, end)``; special tokens (empty offsets) skipped."""
    hits = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not hits:
        raise AttnlabError(f"{what} covers no token (it may fall inside special tokens or be truncated away)")
    return hits[0], hits[-1] + 1


def strip_markers(text: str, open_mark: str = "<<", close_mark: str = ">>") -> tuple[str, list[tuple[int, int]]]:
    """Remove ``<<…>>`` markers; return the clean text and the character ranges they enclosed."""
    pattern = re.compile(re.escape(open_mark) + r"(.*?)" + re.escape(close_mark), re.S)
    clean, ranges, last = [], [], 0
    pos = 0
    for m in pattern.finditer(text):
        clean.append(text[last:m.start()])
        pos += m.start() - last
        ranges.append((pos, pos + len(m.group(1))))
        clean.append(m.group(1))
        pos += len(m.group(1))
        last = m.end()
    clean.append(text[last:])
    if not ranges and open_mark in text:
        raise AttnlabError(f"unclosed marker '{open_mark}' in the text: close it with '{close_mark}'")
    return "".join(clean), ranges


@dataclass(frozen=True)
class HeadSet:
    """A set of (layer, head) pairs, parsed from ``"all"``, ``"L3"``, ``"L3H1,L5H0-7"`` and checked against a model."""

    pairs: frozenset

    @classmethod
    def parse(cls, spec: str, n_layers: int, n_heads: int) -> "HeadSet":
        spec = spec.strip()
        if spec == "all":
            return cls(frozenset((l, h) for l in range(n_layers) for h in range(n_heads)))
        pairs = set()
        for part in filter(None, (p.strip() for p in spec.split(","))):
            m = re.fullmatch(r"L(\d+)(?:-(\d+))?(?:H(\d+)(?:-(\d+))?)?", part)
            if not m:
                raise AttnlabError(f"cannot read head set '{part}': write 'all', 'L3', 'L2-4', 'L3H1' or 'L5H0-7'")
            l0 = int(m.group(1)); l1 = int(m.group(2) or l0)
            h0 = int(m.group(3)) if m.group(3) else 0
            h1 = int(m.group(4) or m.group(3) or n_heads - 1)
            if l1 >= n_layers or l0 > l1:
                raise AttnlabError(f"layer {l1 if l1 >= n_layers else l0} in '{part}' does not exist: the model has "
                                   f"layers 0-{n_layers - 1}")
            if h1 >= n_heads or h0 > h1:
                raise AttnlabError(f"head {h1 if h1 >= n_heads else h0} in '{part}' does not exist: the model has "
                                   f"heads 0-{n_heads - 1} per layer")
            pairs |= {(l, h) for l in range(l0, l1 + 1) for h in range(h0, h1 + 1)}
        if not pairs:
            raise AttnlabError("empty head set: write 'all', 'L3' or 'L3H1,L5H0-7'")
        return cls(frozenset(pairs))

    def __iter__(self):
        return iter(sorted(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def __str__(self) -> str:
        return ",".join(f"L{l}H{h}" for l, h in self)
