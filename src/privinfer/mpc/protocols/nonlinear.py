"""exp, reciprocal and inverse square root on replicated shares, normalised by bit length
(semi-honest, honest majority; only shares and masked values are exchanged).

exp(x), x <= 0: clip to [-T, 0] (T = 16 by default; exp(-16) = 1.1e-7 is below the ulp for
f <= 23), t = x / 2^3 + 1 in [-1, 1] (a free reinterpretation), p(t) the degree-8 Chebyshev
interpolant of e^(t-1) (max error 4.5e-9; powers all truncated, one folded coefficient
truncation), then 3 squarings, all at 30 fractional bits (each ulp amplified by at most 2^3).
Measured max abs error on [-16, 0] (dry run): 1.5e-5 at f=16, 9.3e-7 at f=20 (about one output
ulp; the previous Taylor cubic with 6 squarings: 1.5e-5 / 1.7e-6). 31 rounds (35 before); 21
with `known_nonpositive` (softmax; 25 before): the chain runs on the unclipped input while
[x < -16] is computed in the same rounds (`Party.parallel`), then such entries are set to 0.

reciprocal / rsqrt, x > 0 (`inverse_times`): a2b + suffix-OR find the leading bit j of the ring
value X as a one-hot that is all-zero outside [2^lo, 2^hi), plus the flags [X >= 2^hi] and
[X < 2^lo], so the clamp (saturation, never garbage) is local. The mantissa U = X / 2^(j+1) in
[0.5, 1) is read from X's own bits (bit k: parity(one-hot & (X << k)), one AND round for all
20 bits, rounded half up) and injected with the one-hot (one 2-round bit injection), instead
of a product and a 2-round truncation. g(U) = U^-1 or U^-1/2: a degree-4 relative-minimax
polynomial per quarter of [0.5, 1), the quarter taken from U's top two mantissa bits (their
product comes from X & (X << 1), formed in the first suffix-OR round), coefficients selected
locally and applied as one dot product (constants fitted at import by iteratively reweighted
least squares on 400 Chebyshev nodes per quarter; relative fit error 1.1e-6 for 1/u, 2.6e-7
for 1/sqrt(u); no Newton step), at 20 working bits. The scale 2^(-(j+1)) or 2^(-(j+1)/2)
(parity included) is a public per-bit weight sum over the one-hot; with an `operand`
(softmax's e @ V, a norm's x) the operand's products by the scale (and by the norm weight, or
first by V) ride in g's rounds, so the result is operand * scale * g(U) with one more product.
Measured on [1e-3, 1e6] (dry run, relative error beyond one output ulp): reciprocal 1.3e-6
(f=16), 1.4e-6 (f=20); rsqrt 3.9e-7 (f=16), 7.4e-7 (f=20); max abs error 1.0e-3 to 1.4e-3
for reciprocal (at 1/x = 1000; 2.7e-3 before) and 2.4e-5 for rsqrt (1.5e-5 before). reciprocal and rsqrt 27
rounds (were 37 and 40 with a degree-3 start and a Newton step); softmax's in-range
1/sum times e @ V 24 (33 + 3 for the product by V before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.polynomial import chebyshev

from privinfer.mpc.protocols.arith import (
    mul_bits,
    raw_dot_many,
    raw_mul_many,
    raw_products,
    scale_ring,
    trunc_many,
)
from privinfer.mpc.protocols.boolean import a2b, and_many, bits_to_arith
from privinfer.mpc.protocols.compare import clip_public, ltz
from privinfer.mpc.protocols.poly import combine, powers
from privinfer.mpc.protocols.trunc import trunc_mixed
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import BShare, RShare

EXP_WORK_BITS = 30
EXP_HALVINGS = 3
EXP_DEGREE = 8
EXP_COEFFS = torch.tensor(
    chebyshev.cheb2poly(chebyshev.chebinterpolate(lambda t: np.exp(t - 1.0), EXP_DEGREE))
)
WORK_BITS = 20  # U and g(U) in reciprocal / rsqrt
PUBLIC_BITS = 24  # a public factor (norm weight) in an operand step
INV_DEGREE = 4  # per segment of U: 4 segments of width 1/8 (two mantissa bits)


def exp_nonpos(
    party: Party,
    x: RShare,
    clip_at: float = 16.0,
    out_f: int | None = None,
    known_nonpositive: bool = False,
) -> RShare:
    """exp(x) for x <= 0 (inputs are clipped to [-clip_at, 0]); result at `out_f` (default x.f)
    fractional bits (at most 30). With `known_nonpositive` (e.g. after subtracting the exact row
    max) only the lower clip is applied, saving one comparison per element."""
    out_f = x.f if out_f is None else out_f
    with party.op("exp"):
        if not known_nonpositive:
            return _exp_chain(party, clip_public(party, x, -clip_at, 0.0), out_f)
        # x <= 0: the chain runs on x unclipped while [x < -clip_at] is computed in the same
        # rounds; entries below the clip (garbage from the chain) are then zeroed exactly.
        below, e = party.parallel(
            lambda q: ltz(q, x.add_public(clip_at)), lambda q: _exp_chain(q, x, out_f)
        )
        (cut,) = mul_bits(party, below, [e])
        return e - cut


def _exp_chain(party: Party, x: RShare, out_f: int) -> RShare:
    """p(x / 2^3 + 1)^(2^3) at 30 working bits, p the degree-8 Chebyshev interpolant of
    e^(t - 1) on t in [-1, 1]; accurate for x in [-16, 0] (beyond, garbage)."""
    w = EXP_WORK_BITS
    # x / 2^3 is the same ring value read with f + 3 fractional bits; lift to 30 bits, + 1.
    t = x.mul_ring(1 << (w - x.f - EXP_HALVINGS)).with_f(w).add_public(1.0)
    p = combine(party, powers(party, t, EXP_DEGREE), EXP_COEFFS, w)
    for k in range(EXP_HALVINGS):
        (raw,) = raw_mul_many(party, [(p, p)])
        (p,) = trunc_many(party, [raw], w if k < EXP_HALVINGS - 1 else out_f)
    return p


def _fit_relative(power: float, degree: int, lo: float, hi: float) -> np.ndarray:
    """Monomial coefficients in t = (u - c) / hw (c, hw: centre and half width of [lo, hi]) of a
    relative-minimax fit of u^-power on [lo, hi] (iteratively reweighted least squares on 400
    Chebyshev nodes; deterministic)."""
    c, hw = (lo + hi) / 2, (hi - lo) / 2
    t = np.cos(np.linspace(0.0, np.pi, 400))
    u = c + hw * t
    a = np.vander(t, degree + 1, increasing=True) * (u**power)[:, None]  # p(t) / u^-power
    w = np.ones_like(t)
    for _ in range(40):
        coef = np.linalg.lstsq(a * np.sqrt(w)[:, None], np.sqrt(w), rcond=None)[0]
        r = np.abs(a @ coef - 1.0)
        w = w * (r / r.max() + 1e-3)
        w = w / w.mean()
    return coef


def _segment_fits(power: float) -> np.ndarray:
    """[INV_SEGMENTS, INV_DEGREE + 1]: one fit per segment [1/2 + s/8, 1/2 + (s+1)/8)."""
    return np.stack(
        [_fit_relative(power, INV_DEGREE, 0.5 + s / 8, 0.5 + (s + 1) / 8) for s in range(4)]
    )


INV_FITS = {1.0: _segment_fits(1.0), 0.5: _segment_fits(0.5)}


def _parity(t: torch.Tensor) -> torch.Tensor:
    """XOR of the 64 bits of every word, in bit 0 (linear: works on XOR shares)."""
    for k in (32, 16, 8, 4, 2, 1):
        t = t ^ (t >> k)
    return t & 1


def _leading_bit(
    party: Party, x: RShare, lo: int, hi: int, in_range: bool, w: int
) -> tuple[RShare, RShare, list[RShare]]:
    """For the ring value X of `x`, clamped to [2^lo, 2^hi - 1]: (h, U, seg), f=0, w and 0. h is
    the one-hot (last dim hi - lo) of the clamped X's leading bit j, U = X / 2^(j+1) in
    [0.5, 1) rounded to w bits and seg the one-hot of U's quarter of [0.5, 1), all read from X's
    own bits: mantissa bit k = parity(onehot & (X << k)) (one AND round; the product of the top
    two mantissa bits from X & (X << 1), formed in the first OR round), injected with the one-hot
    and the range flags (one 2-round bit injection). `in_range` (caller guarantees
    2^lo <= X < 2^hi): the OR covers only the window (ceil(log2(hi - lo)) rounds instead of
    6), no flags. 17 rounds (14 for an 8-bit window)."""
    if not 0 <= lo < hi - 1 or hi > 61:
        raise ValueError("need 0 <= lo < hi - 1 and hi <= 61")
    window = ((1 << hi) - 1) & ~((1 << lo) - 1)
    bits = a2b(party, x)
    s = bits.and_public(window) if in_range else bits
    pair = None  # X & (X << 1): bit i = X_i X_(i-1)
    k = 1
    while k < (hi - lo if in_range else 64):  # s_j = OR of bits j .. (window top or 63)
        sr = s.rshift(k)
        prods = and_many(party, [(s, sr)] + ([(bits, bits.lshift(1))] if k == 1 else []))
        s = s ^ sr ^ prods[0]
        pair = prods[1] if k == 1 else pair
        k *= 2
    assert pair is not None
    onehot = (s ^ s.rshift(1)).and_public(window)  # leading bit, if it lies in [lo, hi)
    word = onehot
    if not in_range:  # flags: s_hi (X >= 2^hi, or negative) to bit hi, s_lo (X >= 2^lo) to 63
        word = onehot ^ s.and_public(1 << hi) ^ s.and_public(1 << lo).lshift(63 - lo)
    c = _lead_consts(lo, hi, w)
    ks = c.ks  # onehot & (X << k) for k = 1..w, and onehot & (pair << 1)
    rhs = BShare(
        torch.cat([bits.a.unsqueeze(-1) << ks, (pair.a << 1).unsqueeze(-1)], -1),
        torch.cat([bits.b.unsqueeze(-1) << ks, (pair.b << 1).unsqueeze(-1)], -1),
        party.pid,
    )
    lhs = BShare(
        onehot.a.unsqueeze(-1).expand_as(rhs.a), onehot.b.unsqueeze(-1).expand_as(rhs.b), party.pid
    )
    (prod,) = and_many(party, [(lhs, rhs)])
    slots = c.slots  # bit k - 1: mantissa bit k; bit w: m_1 m_2
    mant = BShare((_parity(prod.a) << slots).sum(-1), (_parity(prod.b) << slots).sum(-1), party.pid)
    positions, col = c.positions, c.col
    both = BShare(torch.stack([word.a, mant.a], -1), torch.stack([word.b, mant.b], -1), party.pid)
    inj = bits_to_arith(party, both, positions)
    h = inj.map(lambda t: t[..., 0, c.h_idx])
    m = inj.map(lambda t: t[..., 1, c.m_idx])
    # U = 1/2 + sum_k m_k 2^-(k+1), with the last bit rounding half up (a sum of int64
    # products: the matrix-vector form wraps exactly like the elementwise one)
    u = m.map(lambda t: t @ c.u_weights).add_ring(1 << (w - 1)).with_f(w)
    m1, m2, m12 = (inj.map(lambda t, c=col[c]: t[..., 1, c]) for c in (0, 1, w))
    if not in_range:
        over = inj.map(lambda t: t[..., 0, col[hi]])
        under = (-inj.map(lambda t: t[..., 0, col[63]])).add_ring(1)
        e_top, e_lo = c.e_top, c.e_lo
        h = (
            h
            + over.map(lambda t: t.unsqueeze(-1)).mul_ring(e_top)
            + under.map(lambda t: t.unsqueeze(-1)).mul_ring(e_lo)
        )
        # clamped X: U = 1 - 2^-w at the top (the one-hot and mantissa are 0), 1/2 below
        u = u + over.mul_ring((1 << (w - 1)) - 1).with_f(w)
        m1, m2, m12 = m1 + over, m2 + over, m12 + over
    seg = [(m12 - m1 - m2).add_ring(1), m2 - m12, m1 - m12, m12]  # quarter 2 m_1 + m_2
    return h, u, seg


@dataclass(frozen=True)
class _LeadConsts:
    """Public constants of `_leading_bit` for one (lo, hi, w)."""

    ks: torch.Tensor
    slots: torch.Tensor
    positions: list[int]
    col: dict[int, int]
    h_idx: torch.Tensor
    m_idx: torch.Tensor
    u_weights: torch.Tensor
    e_top: torch.Tensor
    e_lo: torch.Tensor


_LEAD_CACHE: dict[tuple[int, int, int], _LeadConsts] = {}


def _lead_consts(lo: int, hi: int, w: int) -> _LeadConsts:
    got = _LEAD_CACHE.get((lo, hi, w))
    if got is None:
        positions = sorted(set(range(lo, hi)) | {hi, 63} | set(range(w + 1)))
        col = {p: i for i, p in enumerate(positions)}
        n = hi - lo
        e_top = torch.zeros(n, dtype=torch.int64)
        e_top[-1] = 1
        e_lo = torch.zeros(n, dtype=torch.int64)
        e_lo[0] = 1
        got = _LeadConsts(
            ks=torch.arange(1, w + 1),
            slots=torch.arange(w + 1),
            positions=positions,
            col=col,
            h_idx=torch.tensor([col[j] for j in range(lo, hi)]),
            m_idx=torch.tensor([col[k] for k in range(w)]),
            u_weights=torch.tensor([1 << (w - 2 - k) for k in range(w - 1)] + [1]),
            e_top=e_top,
            e_lo=e_lo,
        )
        if len(_LEAD_CACHE) > 64:
            _LEAD_CACHE.clear()
        _LEAD_CACHE[(lo, hi, w)] = got
    return got


Step = tuple[str, "RShare | torch.Tensor"]  # ("mul" | "matmul", shared) or ("public", real)


def _segment_consts(seg: RShare, values: torch.Tensor, f: int) -> RShare:
    """sum_s seg[..., s] * values[s] (public ring integers; a column per column of a 2-D
    `values`), read with f fractional bits; local, exact mod 2^64 (int64 matmul wraps)."""
    return RShare(seg.a @ values, seg.b @ values, seg.pid, f)


_G_TABLES: dict[tuple[float, int, tuple[int, ...], int], torch.Tensor] = {}


def _g_table(power: float, w: int, cbs: tuple[int, ...], total: int) -> torch.Tensor:
    """[4, 6] public ring constants per quarter: the centre at w bits, C_1..C_4 at cbs, C_0 at
    `total` bits (cached per layout)."""
    key = (power, w, cbs, total)
    got = _G_TABLES.get(key)
    if got is None:
        fits = INV_FITS[power]
        cols = [[round((0.5 + (2 * s + 1) / 16) * 2.0**w) for s in range(4)]]
        cols += [[round(c * 2.0**cb) for c in fits[:, k]] for k, cb in enumerate(cbs, start=1)]
        cols.append([round(c * 2.0**total) for c in fits[:, 0]])
        got = torch.tensor(cols, dtype=torch.int64).T.contiguous()
        if len(_G_TABLES) > 64:
            _G_TABLES.clear()
        _G_TABLES[key] = got
    return got


def _g_and_operand(
    party: Party,
    u: RShare,
    seg: list[RShare],
    power: float,
    operand: RShare,
    steps: list[tuple[Step, int]],
) -> tuple[RShare, RShare]:
    """(g(U), operand after `steps`), scheduled by hand in 7 rounds.

    g(U) = U^-power for U in [0.5, 1) at w bits: segment s (one-hot `seg`, U's top two mantissa
    bits) has its own degree-4 fit in t = 16 (U - c_s) in [-1, 1]; centre and coefficients are
    sums of indicator * public constant (local). Round 1: t^2 (raw); 2-3: its truncation; 4: t^3,
    t^4 (raw); 5: sum_k C_k t^k as one dot product at T = 60 bits (C_k of the raw 2w-bit powers
    at 60 - 2w bits); 6-7: one truncation. Each step (product, then truncation to its bits)
    rides in rounds 1 and 2-3 (the first) or 4 and 6-7 (the second); a "public" step is local.
    """
    if len(steps) > 2:
        raise ValueError("at most two operand steps")
    w, total = u.f, 60
    # t^k has f = w (k = 1, 2: truncated) or 2w (k = 3, 4: raw); C_k at total - f bits
    cbs = (total - w, total - w, total - 2 * w, total - 2 * w)
    table = _g_table(power, w, cbs, total)
    segs = RShare(
        torch.stack([s.a for s in seg], -1), torch.stack([s.b for s in seg], -1), u.pid, 0
    )
    consts = _segment_consts(segs, table, 0)  # [..., 6]: centre, C_1 .. C_4, C_0
    centre = consts.map(lambda c: c[..., 0]).with_f(w)
    t = (u - centre).mul_ring(16)
    op = operand

    def product(step: Step, v: RShare) -> tuple[RShare, RShare, str] | RShare:
        kind, factor = step
        if kind == "public":
            return scale_ring(v, factor, PUBLIC_BITS)  # type: ignore[arg-type]
        return (v, factor, kind)  # type: ignore[return-value]

    def run(step_idx: int, pairs: list[tuple[RShare, RShare, str]]) -> tuple[list[RShare], RShare]:
        if step_idx >= len(steps):
            return raw_products(party, pairs), op
        item = product(steps[step_idx][0], op)
        if isinstance(item, RShare):  # local public product: no reshare
            return raw_products(party, pairs), item
        got = raw_products(party, [*pairs, item])
        return got[:-1], got[-1]

    (t2_raw,), op_raw = run(0, [(t, t, "mul")])
    if steps:
        t2, op = trunc_mixed(party, [t2_raw, op_raw], [t2_raw.f - w, op_raw.f - steps[0][1]])
    else:
        (t2,) = trunc_many(party, [t2_raw], w)
    (t3, t4), op_raw = run(1, [(t2, t, "mul"), (t2, t2, "mul")])
    pairs = []
    for k, p in ((1, t), (2, t2), (3, t3), (4, t4)):
        if total - p.f != cbs[k - 1]:
            raise AssertionError("unexpected power precision")
        pairs.append((consts.map(lambda c, k=k: c[..., k]).with_f(cbs[k - 1]), p))
    (acc,) = raw_dot_many(party, [pairs])
    acc = acc + consts.map(lambda c: c[..., 5]).with_f(total)
    if len(steps) == 2:
        g, op = trunc_mixed(party, [acc, op_raw], [total - w, op_raw.f - steps[1][1]])
    else:
        (g,) = trunc_many(party, [acc], w)
    return g, op


def inverse_times(
    party: Party,
    x: RShare,
    power: float,
    lo: int,
    hi: int,
    *,
    times: float = 1.0,
    operand: RShare | None = None,
    bound: float = 1.0,
    out_f: int,
    in_range: bool = False,
    pre: Step | None = None,
    post: Step | None = None,
) -> RShare:
    """operand * times * X^-power (power 1 or 1/2; X = x's value, ring value clamped to
    [2^lo, 2^hi - 1]), or times * X^-power without `operand` (which broadcasts against x); the
    caller promises |result| <= `bound`. `pre` multiplies the operand first (softmax: e @ V,
    truncated to out_f), `post` after the scale (a norm's weight); both ride in the rounds of
    g (`_g_and_operand`), so they cost no round.

    X = U 2^(j+1) with U in [0.5, 1) and j the leading bit: X^-power = g(U) 2^(-(j+1) power),
    g a degree-4 relative-minimax polynomial per quarter of [0.5, 1) (relative fit error 1.1e-6
    for 1/u, 2.6e-7 for u^-1/2, no Newton step), the scale a public per-bit weight sum over the
    one-hot of j. Rounds: leading bit and U (17; with `in_range` 11 + ceil(log2(hi - lo))),
    g and the operand steps (7), the final product (3): 27 (softmax's 8-bit window: 24)."""
    f = x.f
    w = WORK_BITS
    scales = [times * 2.0 ** ((f - j - 1) * power) for j in range(lo, hi)]
    if operand is None:  # g (|g| <= 2, w bits) * scale (g_bits) stays below 2^60
        g_bits = min(40, 60 - w - math.ceil(math.log2(max(scales) * 2.0)))
        if g_bits < out_f + 3:
            raise ValueError("reciprocal/rsqrt range too wide for this precision")
    else:  # operand (after `pre`, at scaled_f bits) * scale < 2 bound at scaled_f + g_bits
        scaled_f = operand.f if pre is None else out_f
        g_bits = min(40, 60 - scaled_f - math.ceil(math.log2(bound * 2.0)))
        if g_bits < 16:
            raise ValueError("operand too large for this precision")
    h, u, seg = _leading_bit(party, x, lo, hi, in_range, w)
    sw = h.mul_ring(torch.tensor([round(c * 2.0**g_bits) for c in scales]))
    sw = sw.map(lambda t: t.sum(-1)).with_f(g_bits)
    if operand is None:
        g, _ = _g_and_operand(party, u, seg, power, u, [])
        (raw,) = raw_mul_many(party, [(g, sw)])
    else:
        op_f = out_f + 4
        steps: list[tuple[Step, int]] = [(("mul", sw), op_f)]
        if pre is not None:
            steps.insert(0, (pre, out_f))
        if post is not None:
            steps.append((post, op_f))
        g, opv = _g_and_operand(party, u, seg, power, operand, steps)
        (raw,) = raw_mul_many(party, [(opv, g)])
    (out,) = trunc_many(party, [raw], out_f)
    return out


def reciprocal(
    party: Party,
    x: RShare,
    lo: int | None = None,
    hi: int | None = None,
    out_f: int | None = None,
    times: float = 1.0,
    in_range: bool = False,
) -> RShare:
    """1/x for x > 0 (`in_range`: the caller guarantees 2^lo <= X < 2^hi, 3 rounds fewer).
    Default range: ring values [2^(f-10), 2^(f+24)), i.e. ~[1e-3, 1.6e7]; outside it the input
    saturates to the nearest end. The result is multiplied by the public `times` for free
    (folded into the per-bit weights). 31 rounds (28 with in_range and a <= 8-bit window)."""
    f = x.f
    out_f = f if out_f is None else out_f
    lo = max(0, f - 10) if lo is None else lo
    hi = min(61, f + 24) if hi is None else hi
    with party.op("reciprocal"):
        return inverse_times(party, x, 1.0, lo, hi, times=times, out_f=out_f, in_range=in_range)


def rsqrt(
    party: Party,
    x: RShare,
    lo: int | None = None,
    hi: int | None = None,
    out_f: int | None = None,
    times: float = 1.0,
) -> RShare:
    """1/sqrt(x) for x > 0. Default range: ring values [2^(f-10), 2^(f+24)), i.e.
    ~[1e-3, 1.6e7]; outside it the input saturates to the nearest end. 31 rounds."""
    f = x.f
    out_f = f if out_f is None else out_f
    lo = max(0, f - 10) if lo is None else lo
    hi = min(61, f + 24) if hi is None else hi
    with party.op("rsqrt"):
        return inverse_times(party, x, 0.5, lo, hi, times=times, out_f=out_f)
