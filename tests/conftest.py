"""Shared fixtures: the real models, loaded once per test session (transformers' reference copy
of SmolLM2 lives in tests/models/test_llama_reference.py, its only user)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def smollm():
    import privinfer

    return privinfer.load("smollm2-135m")


@pytest.fixture(scope="session")
def minilm():
    import privinfer

    return privinfer.load("minilm-l6")
