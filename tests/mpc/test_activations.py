"""SiLU, GeLU, sigmoid and ReLU against float64, including far tails."""

from __future__ import annotations

import math

import pytest
import torch
from tests.mpc.helpers import run3

from privinfer.mpc.protocols import activations

X = torch.cat(
    [torch.linspace(-30, 30, 1201, dtype=torch.float64), torch.tensor([-3e4, 3e4, -100.0, 250.0])]
)
XQ = torch.round(X * 2**16) / 2**16


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


@pytest.mark.parametrize(
    "fn,ref,tol",
    [
        (activations.silu, torch.nn.functional.silu, 3e-4),
        (activations.gelu, _gelu, 8e-5),
        (activations.sigmoid, torch.sigmoid, 1.3e-3),
        (activations.relu, torch.relu, 2e-5),
    ],
)
def test_activation_error(fn, ref, tol):
    out, p = run3(lambda p, s: fn(p, s[0]), [X])
    err = (out - ref(XQ)).abs().max().item()
    assert err < tol, err


def test_silu_beats_puma():
    out, _ = run3(lambda p, s: activations.silu(p, s[0]), [X])
    assert (out - torch.nn.functional.silu(XQ)).abs().max() < 0.072 / 100
