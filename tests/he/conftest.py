"""Shared CKKS sessions for the HE tests (key generation once per test session)."""

import numpy as np
import pytest

from privinfer.he.ckks import PARAMS_8192, PARAMS_16384, CkksContext


@pytest.fixture(scope="session")
def client8192() -> CkksContext:
    return CkksContext.create_client(PARAMS_8192)


@pytest.fixture(scope="session")
def client16384() -> CkksContext:
    return CkksContext.create_client(PARAMS_16384)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
