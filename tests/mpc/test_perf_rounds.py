"""Round merging and the cheaper building blocks: same results as the plain formulas, and the
round / byte counts the speed work relies on."""

from __future__ import annotations

import torch
from tests.mpc.helpers import run3

from privinfer.mpc.protocols import activations, arith, boolean, nonlinear, poly, segments
from privinfer.mpc.shares import RShare


def test_parallel_merges_rounds_and_keeps_results(gen):
    x = torch.randn(50, generator=gen, dtype=torch.float64) * 3
    y = torch.randn(50, generator=gen, dtype=torch.float64) * 3

    def fn(p, s):
        st = p.link.stats
        r0 = st.rounds
        a, (b, c) = p.parallel(
            lambda q: arith.mul(q, s[0], s[1]),
            lambda q: (arith.mul(q, s[0], s[0]), arith.mul(q, s[1], s[1])),
        )
        assert st.rounds - r0 == 6  # 3 + max(3, 6), not 9
        return RShare.stack([a, b, c])

    out, _ = run3(fn, [x, y])
    want = torch.stack([x * y, x * x, y * y])
    assert (out - want).abs().max() < 1e-3


def test_dot_product_costs_one_element(gen):
    xs = [torch.randn(40, generator=gen, dtype=torch.float64) for _ in range(4)]

    def fn(p, s):
        (raw,) = arith.raw_dot_many(p, [[(s[0], s[1]), (s[2], s[3])]])
        return arith.trunc_many(p, [raw], 16)[0]

    out, _ = run3(fn, xs)
    assert (out - (xs[0] * xs[1] + xs[2] * xs[3])).abs().max() < 1e-4


def test_powers_for_dot_values():
    t = torch.linspace(-1, 1, 101, dtype=torch.float64)

    def fn(p, s):
        pw = poly.powers_for_dot(p, s[0].with_f(16), 5)
        assert [q.f for q in pw] == [16, 16, 32, 16, 32]  # x^2, x^4 feed products
        return RShare.stack([q.with_f(32).mul_ring(1 << (32 - q.f)) for q in pw])

    out, _ = run3(fn, [t])
    want = torch.stack([t**k for k in range(1, 6)])
    assert (out - want).abs().max() < 1e-4


def test_abs_segments_on_boundaries():
    x = torch.tensor(
        [-16.0, -14.0, -2.0, -(2**-16), 0.0, 2**-16, 1.99, 2.0, 15.99, 16.0, -3e4, 3e4]
    )

    def fn(p, s):
        inds, sign = segments.abs_segment_onehot(p, s[0], 1, 3)  # width 2 on [0, 16)
        return RShare.stack([*inds, sign], -1).with_f(16).mul_ring(1 << 16)

    out, p = run3(fn, [x])
    got = out.round().long()
    mag = torch.round(x.abs() * 2**16) - (x < 0).double()  # ~x for negatives
    seg = torch.div(mag, 2**17, rounding_mode="floor").long()
    for row, s_k, neg in zip(got, seg, x < 0, strict=True):
        assert int(row[-1]) == int(neg)
        want = torch.zeros(8, dtype=torch.long)
        if s_k < 8:
            want[s_k] = 1
        assert torch.equal(row[:-1], want)
    assert p.meter.totals()["segments"].rounds == 8 + 6 + 1 + 2


def test_bit_injection_bytes(gen):
    x = torch.randn(64, generator=gen, dtype=torch.float64)

    def fn(p, s):
        bits = boolean.bits_to_arith(p, boolean.a2b(p, s[0]), [63, 0, 5])
        return bits.with_f(16).mul_ring(1 << 16)

    out, p = run3(fn, [x])
    ring = torch.round(x * 2**16).long()
    assert torch.equal(out.round().long()[:, 0], (ring < 0).long())
    assert torch.equal(out.round().long()[:, 2], (ring >> 5) & 1)
    assert p.meter.totals()["b2a"].bytes_sent == 64 * 3 * 8  # party 0 sends 8 bytes per bit


def test_activation_costs(gen):
    x = torch.randn(1000, generator=gen, dtype=torch.float64) * 4
    for fn, label, rounds in ((activations.silu, "silu", 28), (activations.gelu, "gelu", 25)):
        _, p = run3(lambda p, s, fn=fn: fn(p, s[0]), [x])
        cost = p.meter.totals()[label]
        assert cost.rounds == rounds
        assert cost.bytes_sent / x.numel() < 300
    neg = -x.abs() * 10
    _, p = run3(lambda p, s: nonlinear.exp_nonpos(p, s[0], known_nonpositive=True), [neg])
    assert p.meter.totals()["exp"].rounds == 21  # 25 with 6 squarings of a cubic


def test_buffered_key_stream_agrees_across_holders():
    from privinfer.mpc.prf import BufferedKeyStream

    a, b = BufferedKeyStream(b"k" * 16), BufferedKeyStream(b"k" * 16)
    sizes = [1, 7, 40_000, 3, 70_000, 2]
    draws = [a.draw((n,)) for n in sizes]
    assert all(torch.equal(d, b.draw((n,))) for d, n in zip(draws, sizes, strict=True))
    assert not torch.equal(draws[0], BufferedKeyStream(b"j" * 16).draw((1,)))
    assert len({int(v) for v in draws[2][:1000]}) == 1000  # no repeats: fresh stream


def test_trunc_many_mixed_shifts_in_two_rounds(gen):
    x = torch.randn(30, generator=gen, dtype=torch.float64) * 50
    y = torch.randn(7, generator=gen, dtype=torch.float64) * 3

    def fn(p, s):
        r0 = p.link.stats.rounds
        a, b = arith.trunc_many(p, [s[0].mul_ring(1 << 20).with_f(36), s[1].with_f(16)], 10)
        assert p.link.stats.rounds - r0 == 2
        assert a.f == b.f == 10
        return RShare.cat([a, b])

    out, _ = run3(fn, [x, y])
    assert (out - torch.cat([x, y])).abs().max() < 2**-9


def test_inverse_norm_softmax_rounds(gen):
    from privinfer.mpc.protocols import norms, softmax

    pos = torch.rand(100, generator=gen, dtype=torch.float64) * 100 + 0.01
    for fn, label in ((nonlinear.rsqrt, "rsqrt"), (nonlinear.reciprocal, "reciprocal")):
        _, p = run3(lambda p, s, fn=fn: fn(p, s[0]), [pos])
        assert p.meter.totals()[label].rounds == 27  # 40 and 37 with a Newton step
    x = torch.randn(1, 576, generator=gen, dtype=torch.float64) * 3
    w = torch.rand(576, generator=gen, dtype=torch.float64) + 0.5
    _, p = run3(lambda p, s: norms.rms_norm(p, s[0], s[1]), [x, w])
    assert p.meter.totals()["rms_norm"].rounds == 30  # 49 before (decode row, shared weight)
    scores = torch.randn(9, 1, 38, generator=gen, dtype=torch.float64) * 5
    _, p = run3(lambda p, s: softmax.softmax(p, s[0]), [scores])
    assert p.meter.totals()["softmax"].rounds == 17 + 21 + 24  # max, exp, 1/sum times e


def test_rope_q_and_k_share_one_truncation(gen):
    from privinfer.engines.plain import PlainOps
    from privinfer.mpc.ops import MpcOps

    q = torch.randn(3, 4 * 8, generator=gen, dtype=torch.float64) * 4
    k = torch.randn(3, 2 * 8, generator=gen, dtype=torch.float64) * 4
    kw = {"head_dim": 8, "theta": 10000.0}

    def fn(p, s):
        ops = MpcOps(p, None)  # type: ignore[arg-type]
        r0 = p.link.stats.rounds
        rq = ops.rope(s[0], [5, 6, 7], n_heads=4, **kw)
        rk = ops.rope(s[1], [5, 6, 7], n_heads=2, **kw)
        assert p.link.stats.rounds - r0 == 2 and rq.f == rk.f == 16
        return RShare.cat([rq, rk], 1)

    out, _ = run3(fn, [q, k])
    plain = PlainOps()
    want = torch.cat(
        [
            plain.rope(q.float(), [5, 6, 7], n_heads=4, **kw),
            plain.rope(k.float(), [5, 6, 7], n_heads=2, **kw),
        ],
        1,
    ).double()
    assert (out - want).abs().max() < 1e-4
