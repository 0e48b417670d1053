"""Comparison, select, ReLU, clip, max and argmax against float64."""

from __future__ import annotations

import torch
from tests.mpc.helpers import run3

from privinfer.mpc.protocols import boolean, compare
from privinfer.mpc.shares import reveal_bits


def test_a2b_gives_all_bits(gen):
    x = torch.randn(50, generator=gen, dtype=torch.float64) * 1e5
    ring = torch.round(x * 2**16).to(torch.int64)
    out, p = run3(lambda p, s: reveal_bits(p, boolean.a2b(p, s[0])), [x])
    assert torch.equal(out, ring)
    assert p.meter.totals()["a2b"].rounds == 8


def test_ltz_and_less_than(gen):
    x = torch.cat(
        [
            torch.randn(200, generator=gen, dtype=torch.float64) * 3e4,
            torch.tensor([0.0, -(2**-16), 2**-16, 1e9, -1e9]),
        ]
    )
    y = torch.randn(205, generator=gen, dtype=torch.float64)
    out, p = run3(lambda p, s: compare.ltz(p, s[0]).with_f(16), [x])
    assert torch.equal(out * 2**16, (x < 0).double())
    assert p.meter.totals()["compare"].rounds == 10
    out, _ = run3(lambda p, s: compare.less_than(p, s[0], s[1]).with_f(16), [x, y])
    assert torch.equal(out * 2**16, (x < y).double())


def test_select_relu_clip(gen):
    x = torch.randn(64, generator=gen, dtype=torch.float64) * 10
    y = torch.randn(64, generator=gen, dtype=torch.float64) * 10
    out, _ = run3(
        lambda p, s: compare.select(p, compare.less_than(p, s[0], s[1]), s[0], s[1]), [x, y]
    )
    assert (out - torch.minimum(x, y)).abs().max() <= 2**-16
    out, _ = run3(lambda p, s: compare.relu(p, s[0]), [x])
    assert (out - x.clamp(min=0)).abs().max() <= 2**-16
    out, _ = run3(lambda p, s: compare.clip_public(p, s[0], -3.0, 4.5), [x])
    assert (out - x.clamp(-3.0, 4.5)).abs().max() <= 2**-16


def test_max_and_argmax(gen):
    x = torch.randn(3, 37, generator=gen, dtype=torch.float64) * 100
    x[1, 5] = x[1, 20] = 1e4  # tie: lowest index wins
    out, p = run3(lambda p, s: compare.max_lastdim(p, s[0]), [x])
    assert (out - x.max(-1).values).abs().max() <= 2**-16
    assert p.meter.totals()["max"].rounds == 8 + 6 + 2 + 1  # all pairs

    def fn(p, s):
        _, i = compare.argmax_lastdim(p, s[0])
        return i.with_f(16)

    out, _ = run3(fn, [x])
    assert torch.equal((out * 2**16).long(), x.argmax(-1))
