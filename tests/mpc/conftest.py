"""Pytest setup for the MPC tests: one torch thread per party thread, a seeded generator."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
