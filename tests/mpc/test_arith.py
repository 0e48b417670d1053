"""Sharing, reveal, linear ops, mul, matmul and truncation against float64."""

from __future__ import annotations

import torch
from tests.mpc.helpers import KEYS, run3

from privinfer.mpc.protocols import arith
from privinfer.mpc.protocols.trunc import (
    aby3_local_trunc_failure_probability,
    trunc,
    trunc_failure_probability,
)
from privinfer.mpc.runtime import run_local
from privinfer.mpc.shares import (
    accept_client_share,
    client_make_shares,
    client_reconstruct,
    reveal_to,
    reveal_to_client_payload,
    share_from,
)

ULP = 2.0**-16


def test_share_reveal_roundtrip(gen):
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64) * 1000
    out, _ = run3(lambda p, xs: xs[0], [x])
    assert (out - x).abs().max() <= ULP / 2


def test_share_from_each_owner_and_reveal_to_one_party():
    x = torch.tensor([1.5, -2.25, 3e4])

    def program(p):
        outs = []
        for owner in range(3):
            s = share_from(p, owner, x if p.pid == owner else None, (3,))
            outs.append(reveal_to(p, s, target=(owner + 1) % 3))
        return outs

    res = run_local(program, keys=KEYS)
    for owner in range(3):
        target = (owner + 1) % 3
        for pid in range(3):
            got = res[pid][owner]
            if pid == target:
                assert torch.allclose(got, x.double())
            else:
                assert got is None


def test_client_share_and_reveal_to_client():
    x = torch.tensor([[0.25, -7.0], [123.0, -0.001]], dtype=torch.float64)
    payloads = client_make_shares(x, 16)

    def program(p):
        s = accept_client_share(p, payloads[p.pid], (2, 2))
        y = arith.mul_public(p, s, 2.0)
        return reveal_to_client_payload(y)

    back = run_local(program, keys=KEYS)
    got = client_reconstruct(back, (2, 2), 16)
    assert (got - 2 * x).abs().max() <= 2 * ULP


def test_linear_and_public_ops(gen):
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64) * 50
    y = torch.randn(4, 6, generator=gen, dtype=torch.float64) * 50
    out, _ = run3(lambda p, s: (s[0] + s[1] - s[1] - s[1]).add_public(3.5), [x, y])
    assert (out - (x - y + 3.5)).abs().max() <= 3 * ULP
    out, _ = run3(lambda p, s: arith.mul_public(p, s[0], -0.3), [x])
    assert (out - (-0.3 * x)).abs().max() <= 2 * ULP


def test_mul_and_matmul_errors(gen):
    x = torch.randn(8, 16, generator=gen, dtype=torch.float64) * 20
    y = torch.randn(8, 16, generator=gen, dtype=torch.float64) * 20
    w = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    out, p = run3(lambda p, s: arith.mul(p, s[0], s[1]), [x, y])
    assert (out - x * y).abs().max() <= 40 * ULP  # input rounding (|x|,|y| ~ 60) + 1 ulp
    assert p.meter.totals()["mul"].rounds == 3
    out, p = run3(lambda p, s: arith.matmul(p, s[0], s[1]), [x, w.T.contiguous().T])
    assert (out - x @ w).abs().max() <= 100 * ULP
    out, p = run3(lambda p, s: arith.matmul_public(p, s[0], w), [x])
    assert (out - x @ w).abs().max() <= 100 * ULP


def test_mul_handles_massive_activations():
    # |x| up to 3e4 squared stays exact: 9e8 * 2^32 < 2^62.
    x = torch.tensor([3e4, -2.49e4, 0.0072, -1.0], dtype=torch.float64)
    out, _ = run3(lambda p, s: arith.square(p, s[0]), [x])
    assert ((out - x * x).abs() / (x * x).clamp(min=1)).max() < 1e-4


def test_truncation_is_unbiased_and_within_one_ulp():
    x = torch.linspace(-2e5, 2e5, 4001, dtype=torch.float64)

    def fn(p, s):
        one = share_from(p, 1, torch.tensor([1.0]) if p.pid == 1 else None, (1,), f=20)
        (raw,) = arith.raw_mul_many(p, [(s[0], one)])  # x at 36 bits, random components
        return trunc(p, raw.add_ring(12345), 20)

    out, p = run3(fn, [x])
    exact = (torch.round(x * 2**16) * 2**20 + 12345) / 2**36
    err = (out - exact) / ULP
    assert err.abs().max() <= 1.0
    assert abs(err.mean().item()) < 0.05
    assert p.meter.totals()["trunc"].rounds == 2


def test_trunc_failure_probability():
    assert trunc_failure_probability(40, 16) == 0.0
    assert trunc_failure_probability(61, 16) == 0.0
    assert trunc_failure_probability(63, 16) == 1.0
    assert aby3_local_trunc_failure_probability(40) == 2.0**-23
