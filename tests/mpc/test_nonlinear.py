"""exp, reciprocal and rsqrt against float64 over their stated ranges, with saturation."""

from __future__ import annotations

import pytest
import torch
from tests.mpc.helpers import run3

from privinfer.mpc.protocols import nonlinear


def q16(x: torch.Tensor) -> torch.Tensor:
    """The value the parties actually hold after encoding with 16 fractional bits."""
    return torch.round(x * 2**16) / 2**16


def test_exp_on_clip_range():
    x = torch.cat([torch.linspace(-16, 0, 801, dtype=torch.float64), torch.tensor([-50.0, -1e4])])
    out, p = run3(lambda p, s: nonlinear.exp_nonpos(p, s[0]), [x])
    ref = torch.exp(x.clamp(min=-16))
    err = (out - ref).abs().max().item()
    assert err < 3e-5, err
    assert out[-2:].abs().max() < 1e-4  # clipped, never garbage


def test_reciprocal_over_wide_range():
    x = q16(torch.logspace(-3, 6, 300, dtype=torch.float64))
    out, p = run3(lambda p, s: nonlinear.reciprocal(p, s[0]), [x])
    # relative error beyond the output's 1-ulp rounding
    assert (((out - 1 / x).abs() - 2**-16) / (1 / x)).max() < 2e-5
    assert p.meter.totals()["reciprocal"].rounds < 50


def test_reciprocal_saturates():
    x = torch.tensor([0.0, -5.0, 1e-6, 1e9], dtype=torch.float64)
    out, _ = run3(lambda p, s: nonlinear.reciprocal(p, s[0]), [x])
    assert torch.isfinite(out).all()
    lo_end = 2.0 ** (16 - 10 - 16)  # smallest represented input
    assert abs(out[0] - 1 / lo_end) / (1 / lo_end) < 1e-3
    assert abs(out[2] - 1 / lo_end) / (1 / lo_end) < 1e-3
    assert out[1].abs() < 1e-3 and out[3].abs() < 1e-3  # clamped to the top: ~0


def test_rsqrt_over_wide_range():
    x = q16(torch.logspace(-3, 6.1, 300, dtype=torch.float64))
    out, p = run3(lambda p, s: nonlinear.rsqrt(p, s[0]), [x])
    ref = x.rsqrt()
    assert (((out - ref).abs() - 2**-16) / ref).max() < 2e-5
    assert p.meter.totals()["rsqrt"].rounds < 50


def test_rsqrt_saturates():
    x = torch.tensor([0.0, -5.0, 1e-6, 1e9], dtype=torch.float64)
    out, _ = run3(lambda p, s: nonlinear.rsqrt(p, s[0]), [x])
    assert torch.isfinite(out).all()
    lo_end = 2.0 ** (16 - 10 - 16)
    assert abs(out[0] - lo_end**-0.5) / lo_end**-0.5 < 1e-3
    assert abs(out[2] - lo_end**-0.5) / lo_end**-0.5 < 1e-3
    assert out[1].abs() < 1e-3 and out[3].abs() < 1e-3


@pytest.mark.parametrize("frac_bits", [12, 20])
def test_exp_and_rsqrt_at_other_precisions(frac_bits):
    ulp = 2.0**-frac_bits
    x = torch.linspace(-16, 0, 401, dtype=torch.float64)
    xq = torch.round(x / ulp) * ulp
    out, _ = run3(lambda p, s: nonlinear.exp_nonpos(p, s[0]), [x], frac_bits=frac_bits)
    assert (out - torch.exp(xq)).abs().max() < 2.5 * ulp
    y = torch.round(torch.logspace(-2, 5, 200, dtype=torch.float64) / ulp) * ulp
    out, _ = run3(lambda p, s: nonlinear.rsqrt(p, s[0]), [y], frac_bits=frac_bits)
    assert (((out - y.rsqrt()).abs() - ulp) / y.rsqrt()).max() < 2e-5


def test_inverse_polynomials_are_the_stated_fits():
    for power, bound in ((1.0, 1.2e-6), (0.5, 3e-7)):
        fits = nonlinear.INV_FITS[power]
        for s_k in range(4):
            u = torch.linspace(0.5 + s_k / 8, 0.5 + (s_k + 1) / 8, 4001, dtype=torch.float64)
            t = 16 * (u - (0.5 + (2 * s_k + 1) / 16))
            p = sum(float(c) * t**k for k, c in enumerate(fits[s_k]))
            rel = (p * u**power - 1).abs().max().item()
            assert rel < bound, (power, s_k, rel)
