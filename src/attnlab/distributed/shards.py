"""A JSONL data set read line by line and cut into shards of a fixed number of texts.

Each line is a JSON object with a ``"text"`` field, or a JSON string. A line that is not valid JSON, or holds no
text, is skipped and named by its line number; the rest of the data set continues. Shards depend only on the data
set and the shard size, never on the number of workers, so every run sums the same texts in the same order.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from attnlab.errors import AttnlabError


@dataclass
class Dataset:
    """The texts of a JSONL file (with their line numbers), the lines skipped and why, and the file's sha256."""

    path: Path
    sha256: str
    texts: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    n_lines: int = 0


def _text_of(line: str) -> str:
    """The text of one JSONL line; ValueError (with the reason) when the line holds none."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(value, dict):
        value = value.get("text")
    if not isinstance(value, str):
        raise ValueError('no text: give a JSON object with a "text" string, or a JSON string')
    if not value.strip():
        raise ValueError("the text is empty")
    return value


def read_dataset(path) -> Dataset:
    """Read a UTF-8 JSONL data set; refuse a missing, unreadable or text-less file in one line."""
    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"--dataset {path} is not a file: give a JSONL file, one {{\"text\": ...}} per line")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AttnlabError(f"--dataset {path} is not UTF-8 text: convert it first (e.g. iconv -t UTF-8)") from None
    data = Dataset(path=path, sha256=hashlib.sha256(raw).hexdigest())
    for number, line in enumerate(content.splitlines(), start=1):
        data.n_lines = number
        if not line.strip():
            continue
        try:
            data.texts.append(_text_of(line))
            data.lines.append(number)
        except ValueError as exc:
            data.skipped.append({"line": number, "reason": str(exc)})
    if not data.texts:
        raise AttnlabError(f"--dataset {path} holds no text ({len(data.skipped)} lines skipped): give one "
                           '{"text": ...} object per line')
    return data


def shard_ranges(n_texts: int, shard_size: int) -> list[range]:
    """The text indices of each shard: consecutive runs of ``shard_size`` texts (the last one may be shorter)."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise AttnlabError(f"shard size must be a whole number >= 1, got {shard_size!r}")
    return [range(start, min(n_texts, start + shard_size)) for start in range(0, n_texts, shard_size)]
