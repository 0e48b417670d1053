"""Shared fixtures: the real models, loaded once per test session."""

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


@pytest.fixture(scope="session")
def hf_smollm(smollm):
    """transformers' own LlamaForCausalLM loaded from the same GGUF file (the reference)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return AutoModelForCausalLM.from_pretrained(
        str(smollm.source.parent), gguf_file=smollm.source.name, dtype=torch.float32
    ).eval()
