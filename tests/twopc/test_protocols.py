"""Every two-party protocol against float64 within its stated error, and the views of
comparison and multiplication independent of the secrets (chi-square, as in test_ot)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tests.twopc.helpers import (
    CHI2_CRIT_255_DOF_1E3_OVER_4,
    RecordingLink,
    byte_hist,
    chi2_two_sample,
)

from privinfer.net.memory import MemoryNetwork
from privinfer.twopc import activations, arith, compare, nonlinear, norms, ring, softmax, trunc
from privinfer.twopc.runtime import run_local

F = 16
RNG = np.random.default_rng(3)


def run2(fn, *inputs):  # type: ignore[no-untyped-def]
    """Party 0 owns `inputs` (reals, encoded at F); both run fn(party, *shares); the result
    (a share array) is revealed and decoded (or returned raw when fn returns a tuple)."""
    enc = [ring.encode(x, F) for x in inputs]

    def prog(p):  # type: ignore[no-untyped-def]
        shares = [
            ring.share_input(p, 0, e.reshape(-1) if p.pid == 0 else None, e.size).reshape(e.shape)
            for e in enc
        ]
        return ring.reveal(p, fn(p, *shares)), p.meter

    (out, meter), (out1, _) = run_local(prog)
    assert np.array_equal(out, out1)
    return out, [ring.decode(e, F) for e in enc], meter


def test_millionaires_msb_b2a_mux_relu():
    n = 4000
    u = RNG.integers(0, 2**63, n, dtype=np.uint64)
    v = u.copy()
    v[::3] = RNG.integers(0, 2**63, v[::3].size, dtype=np.uint64)
    v[1::3] += np.uint64(1)

    def prog(p):  # type: ignore[no-untyped-def]
        return compare.millionaires(p, u if p.pid == 0 else v, 63)

    a, b = run_local(prog)
    assert np.array_equal(a ^ b, (u < v).astype(np.uint8))
    x = np.concatenate([RNG.normal(0, 1e3, 2000), [0.0, -(2.0**-16), 2.0**-16, 3e4, -3e4]])
    out, (xd,), _ = run2(lambda p, s: compare.b2a(p, compare.msb(p, s)), x)
    assert np.array_equal(out, (xd < 0).astype(np.uint64))
    out, (xd,), _ = run2(compare.relu, x)
    assert np.array_equal(ring.decode(out, F), np.maximum(xd, 0))


@pytest.mark.parametrize("exact", [False, True])
def test_truncation(exact):
    x = np.concatenate([RNG.normal(0, 1e4, 3000), [0.0, -1e-4, 2.0**40, -(2.0**40)]])
    out, (xd,), _ = run2(lambda p, s: trunc.trunc(p, s, 7, exact), x)
    diff = out.view(np.int64) - (ring.encode(xd, F).view(np.int64) >> 7)
    assert set(np.unique(diff)) <= ({0} if exact else {0, -1})


def test_products():
    x, y = RNG.normal(0, 50, 2000), RNG.normal(0, 5, 2000)
    out, (xd, yd), _ = run2(arith.mul, x, y)
    assert np.abs(ring.decode(out, F) - xd * yd).max() <= 2 * 2.0**-F
    w = ring.encode(RNG.normal(0, 1, 2000), F)

    def prog(p):  # type: ignore[no-untyped-def]
        s = ring.share_input(p, 1, ring.encode(y, F) if p.pid == 1 else None, y.size)
        return ring.reveal(p, arith.mul_private(p, s, w if p.pid == 0 else None, owner=0))

    got, _ = run_local(prog)
    ref = ring.decode(ring.encode(y, F), F) * ring.decode(w, F)
    assert np.abs(ring.decode(got, F) - ref).max() <= 2 * 2.0**-F


def test_exp_reciprocal_rsqrt():
    x = np.concatenate([np.linspace(-70, 0, 1500), [-1e6]])
    out, (xd,), _ = run2(nonlinear.exp_nonpos, x)
    assert np.abs(ring.decode(out, F) - np.exp(xd)).max() < 4e-5
    x = np.exp(RNG.uniform(math.log(2**-10), math.log(2**23.9), 150))
    out, (xd,), _ = run2(nonlinear.reciprocal, x)
    assert np.abs(ring.decode(out, F) - 1 / xd).max() < 4 * 2.0**-F
    out, (xd,), _ = run2(lambda p, s: nonlinear.rsqrt(p, s, out_f=28), x)
    rel = np.abs(out.view(np.int64) / 2.0**28 * np.sqrt(xd) - 1)
    assert rel.max() < 5e-5  # Newton 3.6e-6 plus one ulp at 2^-28 of outputs down to 2^-12


def test_silu_gelu():
    x = np.linspace(-30, 30, 1201)
    out, (xd,), _ = run2(activations.silu, x)
    assert np.abs(ring.decode(out, F) - xd / (1 + np.exp(-xd))).max() < 1e-4
    out, (xd,), _ = run2(activations.gelu, x)
    ref = 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)))
    assert np.abs(ring.decode(out, F) - ref).max() < 1e-4


def test_softmax_and_argmax():
    x = RNG.normal(0, 3, (4, 50))
    x[0, 5] = -1e4  # a mask
    x[1, 7] = x[1, 9] = 40.0  # a tie goes to the lower index
    out, (xd,), _ = run2(softmax.softmax, x)
    e = np.exp(xd - xd.max(axis=1, keepdims=True))
    assert np.abs(ring.decode(out, F) - e / e.sum(axis=1, keepdims=True)).max() < 1e-4
    out, (xd,), _ = run2(softmax.argmax, x)
    assert np.array_equal(out.view(np.int64), xd.argmax(axis=1))


def test_norms_with_massive_activations():
    x = RNG.normal(0, 1, (3, 64))
    x[1] *= 100
    x[2, 3] = 2.4e4  # SmolLM2-like massive activation
    g = ring.encode(RNG.normal(1, 0.1, 64), F)
    b = ring.encode(RNG.normal(0, 0.1, 64), F)
    gd, bd = ring.decode(g, F), ring.decode(b, F)
    out, (xd,), _ = run2(lambda p, s: norms.rms_norm(p, s, g if p.pid == 0 else None), x)
    ref = xd / np.sqrt((xd**2).mean(axis=1, keepdims=True) + 1e-5) * gd
    assert np.abs(ring.decode(out, F) - ref).max() < 3e-4
    out, (xd,), _ = run2(
        lambda p, s: norms.layer_norm(p, s, *((g, b) if p.pid == 0 else (None, None))), x
    )
    c = xd - xd.mean(axis=1, keepdims=True)
    ref = c / np.sqrt((c**2).mean(axis=1, keepdims=True) + 1e-5) * gd + bd
    assert np.abs(ring.decode(out, F) - ref).max() < 3e-4


def _view(secret: float, owner: int) -> bytes:
    """Everything the party that does not own the secret receives during MSB and a product."""
    n = 3000
    net = MemoryNetwork(2, timeout_s=30)
    links = [RecordingLink(link) for link in net.links]

    def prog(p):  # type: ignore[no-untyped-def]
        v = ring.encode(np.full(n, secret), F) if p.pid == owner else None
        s = ring.share_input(p, owner, v, n)
        compare.msb(p, s)
        arith.mul(p, s, s)

    run_local(prog, links=links)
    return b"".join(links[1 - owner].view)


@pytest.mark.parametrize("owner", [0, 1])
def test_comparison_and_product_views_do_not_depend_on_the_secret(owner):
    a, b = _view(-3.0, owner), _view(2.0e4, owner)
    assert len(a) == len(b) > 100_000
    assert chi2_two_sample(byte_hist(a), byte_hist(b)) < CHI2_CRIT_255_DOF_1E3_OVER_4


def test_square():
    x = RNG.normal(0, 50, 2000)
    out, (xd,), _ = run2(arith.square, x)
    assert np.abs(ring.decode(out, F) - xd * xd).max() <= 2 * 2.0**-F


def test_msb_on_fewer_bits():
    x = np.concatenate([RNG.integers(-(2**39), 2**39, 3000), [-(2**39), 2**39 - 1, 0, -1]])
    enc = x.astype(np.int64).view(np.uint64)

    def prog(p):  # type: ignore[no-untyped-def]
        s = ring.share_input(p, 0, enc if p.pid == 0 else None, x.size)
        return compare.msb(p, s, bits=40)

    a, b = run_local(prog)
    assert np.array_equal(a ^ b, (x < 0).astype(np.uint8))


def test_round_counts_and_the_offline_split():
    """With the OT extension prepared ahead, the online rounds are the documented ones and
    the only offline rounds left are the Beaver-triple corrections."""
    n = 500

    def prog(p):  # type: ignore[no-untyped-def]
        p.prepare(200_000, 200_000)
        s = ring.share_input(p, 0, ring.encode(np.ones(n), F) if p.pid == 0 else None, n)
        b = compare.msb(p, s)
        compare.mux(p, b, s)
        trunc.trunc(p, s, F)
        arith.mul(p, s, s)
        return p.meter.by_op

    meter, _ = run_local(prog)
    assert [meter[k].rounds for k in ("msb", "mux", "trunc", "mul")] == [6, 1, 1, 2]
    assert "msb/offline" not in meter  # AND triples need no messages beyond the extension
    assert meter["mul/offline"].rounds == 1
    assert meter["prepare/offline"].bytes_sent + meter["prepare/offline"].bytes_received == (
        16 * 400_128
    )
