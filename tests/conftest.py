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
