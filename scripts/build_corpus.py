"""Build the English prose corpus the bundled ``tiny`` model is trained on.

Everything comes from Debian packages, fetched with ``apt-get download`` (no other network):

* bible-kjv-text  -- King James Bible (public domain), read with the ``bible`` program of bible-kjv
* python3.11-doc  -- the reStructuredText sources of the Python 3.11 documentation (PSF licence)
* debian-reference-en -- the Debian Reference (GPL-2+), HTML converted to text
* jargon-text     -- the Jargon File 4.4.7 (public domain)
* fortunes        -- fortune cookie files (BSD / public domain mix)

Usage: ``python scripts/build_corpus.py OUT_DIR`` writes ``OUT_DIR/corpus.txt`` (documents separated by
a line holding only ``<|doc|>``) and ``OUT_DIR/sources.json`` (bytes per source).
"""
from __future__ import annotations

import gzip
import html.parser
import json
import re
import subprocess
import sys
from pathlib import Path

PACKAGES = ["bible-kjv-text", "bible-kjv", "python3.11-doc", "debian-reference-en", "jargon-text", "fortunes"]
DOC_SEPARATOR = "\n<|doc|>\n"


class _HTMLText(html.parser.HTMLParser):
    """Collects the visible text of an HTML page, paragraph by paragraph."""

    BLOCKS = {"p", "div", "li", "h1", "h2", "h3", "h4", "pre", "tr", "br", "dt", "dd"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [re.sub(r"[ \t]+", " ", line).strip() for line in raw.splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def fetch_packages(work: Path) -> Path:
    """Download and unpack the Debian packages into ``work/root``."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    root = work / "root"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def kjv(root: Path) -> list[str]:
    """The King James Bible, one document per book."""
    out = subprocess.run(
        [str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "-l2000"],
        input="gen1:1-rev22:21\n", capture_output=True, text=True, check=True,
    ).stdout
    books, current = [], []
    for line in out.splitlines():
        if line.startswith("bible(") or line.startswith("bible:") or line.startswith("Hit '?'"):
            continue
        m = re.match(r"\s*\d+\s+(.*)", line)
        if m:
            current.append(m.group(1).strip())
        elif re.match(r"^[1-3]?\s?[A-Z][a-z]+.* 1$", line.strip()) and current:
            books.append("\n".join(current))
            current = []
    if current:
        books.append("\n".join(current))
    return books


def python_docs(root: Path) -> list[str]:
    """reStructuredText sources of the Python docs, markup lightly stripped."""
    docs = []
    for path in sorted((root / "usr/share/doc/python3.11/html/_sources").rglob("*.rst.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)  # :ref:`x <y>` -> x
        text = re.sub(r"^\s*\.\. .*$", "", text, flags=re.M)
        text = re.sub(r"^[=*\-~^#\"']{4,}\s*$", "", text, flags=re.M)
        text = text.replace("``", "")
        docs.append(re.sub(r"\n{3,}", "\n\n", text).strip())
    return docs


def debian_reference(root: Path) -> list[str]:
    docs = []
    for path in sorted((root / "usr/share/debian-reference").glob("*.en.html")):
        parser = _HTMLText()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        docs.append(parser.text())
    return docs


def jargon(root: Path) -> list[str]:
    text = gzip.open(root / "usr/share/doc/jargon-text/jargon.txt.gz", "rt", encoding="utf-8").read()
    text = "\n".join(l for l in text.splitlines() if not re.match(r"^\s*[│├┌└┼─┬┴┤┐┘]", l))
    return [chunk.strip() for chunk in re.split(r"\n(?=:)", text) if len(chunk.strip()) > 200]


def fortunes(root: Path) -> list[str]:
    docs = []
    for path in sorted((root / "usr/share/games/fortunes").iterdir()):
        if path.suffix or path.is_dir() or path.name in ("art", "ascii-art"):
            continue
        cookies = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
        docs.append("\n\n".join(c.strip() for c in cookies if c.strip()))
    return docs


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = fetch_packages(out)
    sources = {"kjv": kjv(root), "python-docs": python_docs(root), "debian-reference": debian_reference(root),
               "jargon": jargon(root), "fortunes": fortunes(root)}
    docs = [d for docs in sources.values() for d in docs if d]
    (out / "corpus.txt").write_text(DOC_SEPARATOR.join(docs), encoding="utf-8")
    sizes = {name: sum(len(d.encode()) for d in ds) for name, ds in sources.items()}
    (out / "sources.json").write_text(json.dumps(sizes, indent=2))
    print(json.dumps(sizes))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "corpus")
