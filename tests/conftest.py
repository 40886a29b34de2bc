import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)

import attnlab  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    return attnlab.load("tiny")


@pytest.fixture(scope="session")
def minilm():
    return attnlab.load("minilm")


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct from its PyPI GGUF package (converted once to attnlab's cache by setup.sh)."""
    return attnlab.load("smollm2")


@pytest.fixture(scope="session")
def gemma3():
    """Gemma 3 270M base from its PyPI GGUF packages (converted once to attnlab's cache by setup.sh)."""
    return attnlab.load("gemma3")
