"""exp, reciprocal and rsqrt on 2-out-of-2 fixed-point shares (semi-honest; built from
comparisons, multiplexers, Beaver products and truncation; computational security of the OTs;
no statistical error). Internal precision WORK_BITS = 28 fraction bits (every product stays
under 4 * 2^56 < 2^62, as truncation needs).

exp_nonpos(x), x <= 0: clip at -64 (e^-64 ~ 1.6e-28 is 0 at any precision used here), then
(1 + t + t^2 / 2)^(2^8) with t = x / 2^8: one product and 8 squarings at 28 bits. Approximation
error ~ |x|^3 e^x / (6 * 2^16) <= 3.4e-6 (at x = -3); rounding adds ~2^8 ulps of 2^-28.
Measured max abs error on [-70, 0] at f = 16: 2.9e-5 (tests/twopc asserts 4e-5). Valid for
every encodable x <= 0; x > 0 is outside the range (wrong result).
reciprocal(x) and rsqrt(x), x > 0 in [2^lo, 2^hi) as ring integers at scale 2^f_in: the
leading bit j of X comes from K = hi - lo - 1 comparisons [X >= 2^k] (one batched MSB on
hi + 1 bits, since |X - 2^k| < 2^hi), B2A and
a public-coefficient sum; u = X / 2^(j+1) in [0.5, 1); then Newton from a linear guess:
1/u from 2.9142 - 2u (SPU's), 3 steps (relative error 2.9e-9 in float); 1/sqrt(u) from
1.7622 - 0.7876u (relative minimax fit here, 3.2e-2), 2 steps (3.6e-6); finally times the
public 2^(f_in - j - 1) (resp. its square root) selected by the one-hot of j.
Defaults: real inputs in [2^-10, 2^24). Outside the range the result is wrong. Measured on
150 log-uniform points of that range, f = 16: reciprocal max abs error 3.0e-5 (2 output ulps);
rsqrt with a 28-bit output, max relative error 2.3e-5 (the Newton error plus one 2^-28 ulp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from privinfer.twopc import compare
from privinfer.twopc.arith import mul, mul_raw, square
from privinfer.twopc.ring import encode, public
from privinfer.twopc.trunc import trunc

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

WORK = 28
EXP_SQUARINGS = 8
EXP_CLIP = -64.0


def clip_below(party: TwoParty, x: np.ndarray, lo: float, f: int) -> np.ndarray:
    """max(x, lo) for a public lo (x at scale 2^f). 7 rounds."""
    lo_ring = encode(lo, f)
    below = compare.msb(party, x - public(party, np.full(x.shape, lo_ring)))
    return compare.select(party, below, public(party, np.full(x.shape, lo_ring)), x)


def exp_nonpos(party: TwoParty, x: np.ndarray, out_f: int | None = None) -> np.ndarray:
    """e^x for shared x <= 0 at scale 2^party.f; result at scale 2^out_f (default party.f)."""
    out_f = party.f if out_f is None else out_f
    with party.op("exp"):
        shape = x.shape
        x = clip_below(party, np.asarray(x, np.uint64).reshape(-1), EXP_CLIP, party.f)
        shift = WORK - party.f - EXP_SQUARINGS  # t = x / 2^8 at scale 2^WORK
        t = x << np.uint64(shift) if shift >= 0 else trunc(party, x, -shift)
        y = t + square(party, t, WORK + 1) + public(party, np.full(t.shape, np.uint64(1 << WORK)))
        for _ in range(EXP_SQUARINGS):
            y = square(party, y, WORK)
        return trunc(party, y, WORK - out_f).reshape(shape)


def _leading_bit(party: TwoParty, x: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, list[int]]:
    """Arithmetic shares (f=0) of the one-hot of j with 2^j <= X < 2^(j+1), j in [lo, hi),
    shape (n, hi - lo), and the list of j."""
    n = x.size
    ks = np.arange(lo + 1, hi, dtype=np.uint64)
    diffs = x[:, None] - public(party, np.broadcast_to(np.uint64(1) << ks, (n, ks.size)))
    ge = compare.drelu(party, diffs.reshape(-1), bits=hi + 1)  # |X - 2^k| < 2^hi
    g = compare.b2a(party, ge).reshape(n, ks.size)
    one = public(party, np.ones((n, 1), np.uint64))
    g = np.concatenate([one, g, np.zeros((n, 1), np.uint64)], axis=1)
    return g[:, :-1] - g[:, 1:], list(range(lo, hi))


def _normalize(
    party: TwoParty, x: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(u = X / 2^(j+1) at scale 2^WORK, one-hot of j, js)."""
    if not 0 <= lo < hi <= 61:
        raise ValueError("normalisation range must satisfy 0 <= lo < hi <= 61")
    onehot, js = _leading_bit(party, x, lo, hi)
    t = max(0, hi - WORK)
    consts = np.array([1 << (WORK + t - j - 1) for j in js], dtype=np.uint64)
    c = (onehot * consts).sum(axis=1, dtype=np.uint64)
    return trunc(party, mul_raw(party, x, c), t), onehot, js


def _apply_scale(
    party: TwoParty, y: np.ndarray, onehot: np.ndarray, consts: np.ndarray, out_f: int
) -> np.ndarray:
    """y (scale 2^WORK, |y| < 2) times sum_j onehot_j consts_j (real constants), to scale
    2^out_f. The constants are encoded at the largest scale 2^S with max * 2^S <= 2^33, so
    the product stays under 2^62; the smallest keeps log2(min * 2^S) bits of precision."""
    top = float(np.max(consts))
    scale_bits = 33 - int(np.ceil(np.log2(top)))
    if WORK + scale_bits < out_f:
        raise ValueError("output precision too high for this range")
    ints = np.array([round(c * 2.0**scale_bits) for c in consts], dtype=np.uint64)
    d = (onehot * ints).sum(axis=1, dtype=np.uint64)
    return trunc(party, mul_raw(party, y, d), WORK + scale_bits - out_f)


def _range_bits(f_in: int, lo_real_log2: int, hi_real_log2: int) -> tuple[int, int]:
    lo, hi = f_in + lo_real_log2, f_in + hi_real_log2
    if hi > 61 or lo < 0:
        raise ValueError("reciprocal/rsqrt range too wide for this precision")
    return lo, hi


def reciprocal(
    party: TwoParty,
    x: np.ndarray,
    f_in: int | None = None,
    log2_range: tuple[int, int] = (-10, 24),
    out_f: int | None = None,
) -> np.ndarray:
    """1/x for shared x > 0 at scale 2^f_in (default party.f) with 2^a <= x < 2^b for
    log2_range = (a, b); result at scale 2^out_f (default party.f)."""
    f_in = party.f if f_in is None else f_in
    out_f = party.f if out_f is None else out_f
    with party.op("reciprocal"):
        shape = x.shape
        lo, hi = _range_bits(f_in, *log2_range)
        u, onehot, js = _normalize(party, np.asarray(x, np.uint64).reshape(-1), lo, hi)
        y = public(party, np.full(u.shape, encode(2.9142, WORK))) - (u << np.uint64(1))
        two = public(party, np.full(u.shape, encode(2.0, WORK)))
        for _ in range(3):
            y = mul(party, y, two - mul(party, u, y, WORK), WORK)
        consts = np.array([2.0 ** (f_in - j - 1) for j in js])
        return _apply_scale(party, y, onehot, consts, out_f).reshape(shape)


def rsqrt(
    party: TwoParty,
    x: np.ndarray,
    f_in: int | None = None,
    log2_range: tuple[int, int] = (-10, 24),
    out_f: int | None = None,
    times: float = 1.0,
) -> np.ndarray:
    """times / sqrt(x) for shared x > 0 at scale 2^f_in, 2^a <= x < 2^b; result at scale
    2^out_f (default party.f). `times` is a public factor folded into the constants."""
    f_in = party.f if f_in is None else f_in
    out_f = party.f if out_f is None else out_f
    with party.op("rsqrt"):
        shape = x.shape
        lo, hi = _range_bits(f_in, *log2_range)
        u, onehot, js = _normalize(party, np.asarray(x, np.uint64).reshape(-1), lo, hi)
        c1 = np.uint64(round(0.78760285 * 2**WORK))
        y = public(party, np.full(u.shape, encode(1.76220164, WORK))) - trunc(party, u * c1, WORK)
        three = public(party, np.full(u.shape, encode(3.0, WORK)))
        for _ in range(2):
            y2 = square(party, y, WORK)
            y = mul(party, y, three - mul(party, u, y2, WORK), WORK + 1)
        consts = np.array([times * 2.0 ** ((f_in - j - 1) / 2) for j in js])
        return _apply_scale(party, y, onehot, consts, out_f).reshape(shape)
