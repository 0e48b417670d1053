"""Softmax (with causal mask) and RMSNorm / LayerNorm on SmolLM2-like massive activations."""

from __future__ import annotations

import pytest
import torch
from tests.mpc.helpers import run3

from privinfer.mpc.protocols import norms, softmax


def q(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 2**16) / 2**16


def test_softmax_causal(gen):
    x = torch.randn(2, 37, 37, generator=gen, dtype=torch.float64) * 10
    mask = softmax.causal_mask(37, 37)
    out, p = run3(lambda p, s: softmax.softmax(p, s[0], mask), [x])
    ref = torch.softmax(q(x).masked_fill(~mask, float("-inf")), -1)
    err = (out - ref).abs().max().item()
    assert err < 5e-5, err
    assert out.masked_select(~mask).abs().max() == 0


def test_softmax_decode_row(gen):
    x = torch.randn(9, 1, 40, generator=gen, dtype=torch.float64) * 3
    out, _ = run3(lambda p, s: softmax.softmax(p, s[0]), [x])
    assert (out - torch.softmax(q(x), -1)).abs().max() < 5e-5


def _massive_rows(gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(4, 576, generator=gen, dtype=torch.float64)
    x[0] *= 0.085  # mean(x^2) ~ 0.0072
    x[1, 3], x[1, 100] = 24900.0, -24000.0  # mean(x^2) ~ 1.08e6
    x[2] *= 30.0
    x[3, :] = 3e4 * torch.sign(x[3])  # every channel at the stated limit
    return x


def test_rms_norm_massive_activations(gen):
    x = _massive_rows(gen)
    w = torch.rand(576, generator=gen, dtype=torch.float64) + 0.5
    out, p = run3(lambda p, s: norms.rms_norm(p, s[0], w, eps=1e-5), [x])
    xq = q(x)
    ref = xq * torch.rsqrt(xq.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    err = (out - ref).abs().max().item()
    assert err < 5e-3, err
    assert p.meter.totals()["rms_norm"].rounds < 60


def test_layer_norm_massive_activations(gen):
    x = _massive_rows(gen)[:, :384] + 7.0
    w = torch.rand(384, generator=gen, dtype=torch.float64) + 0.5
    b = torch.randn(384, generator=gen, dtype=torch.float64)
    out, _ = run3(lambda p, s: norms.layer_norm(p, s[0], w, b, eps=1e-12), [x])
    ref = torch.nn.functional.layer_norm(q(x), (384,), w, b, eps=1e-12)
    err = (out - ref).abs().max().item()
    assert err < 5e-3, err


@pytest.mark.parametrize("frac_bits,tol", [(12, 6e-4), (20, 1e-5)])
def test_softmax_at_other_precisions(gen, frac_bits, tol):
    ulp = 2.0**-frac_bits
    x = torch.randn(4, 16, generator=gen, dtype=torch.float64) * 5
    out, _ = run3(lambda p, s: softmax.softmax(p, s[0]), [x], frac_bits=frac_bits)
    ref = torch.softmax(torch.round(x / ulp) * ulp, -1)
    assert (out - ref).abs().max() < tol


def test_softmax_matmul_equals_softmax_then_product(gen):
    scores = torch.randn(3, 5, 37, generator=gen, dtype=torch.float64) * 4
    values = torch.randn(3, 37, 64, generator=gen, dtype=torch.float64) * 3
    values[0, 3, 7] = 3e4  # large values stay within |values| < 2^15
    mask = softmax.causal_mask(5, 37)

    def fn(p, s):
        return softmax.softmax_matmul(p, s[0], s[1], mask)

    out, p = run3(fn, [scores, values])
    sq = torch.round(scores * 2**16) / 2**16
    vq = torch.round(values * 2**16) / 2**16
    ref = torch.softmax(sq.masked_fill(~mask, float("-inf")), -1) @ vq
    err = (out - ref).abs().amax((1, 2))
    # softmax then a product: 0.30 (the head with a 3e4 value) and 3.5e-4
    assert err[0] < 0.01 and err[1:].max() < 5e-5
    assert p.meter.totals()["softmax"].rounds == 17 + 21 + 24  # the product by values is free
