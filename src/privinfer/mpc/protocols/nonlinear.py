"""exp, reciprocal and inverse square root on replicated shares, normalised by bit length
(semi-honest, honest majority; only shares and masked values are exchanged).

exp(x), x <= 0: clip to [-T, 0] (T = 16 by default; exp(-16) = 1.1e-7 is below the ulp for
f <= 23), y = x / 2^6 in [-0.25, 0] (a free reinterpretation), p(y) = 1 + y + y^2 (1/2 + y/6)
(Taylor), then 6 squarings, all at 30 fractional bits. Taylor's error e^x |x|^4 / (2^18 * 24)
peaks at 7.4e-7 (x = -4); squaring amplifies each ulp of 2^-30 by at most 2^6. Measured max abs
error on [-16, 0] (dry run): 1.5e-5 at f=16, 1.6e-6 at f=20 (about one output ulp). 35 rounds;
25 with `known_nonpositive` (softmax): the chain runs on the unclipped input while [x < -16]
is computed in the same rounds (`Party.parallel`), then such entries are set to exactly 0.

reciprocal / rsqrt, x > 0: a2b + suffix-OR find the leading bit j of the ring value X; the input
is clamped to [2^lo, 2^hi) (saturation, never garbage), U = X 2^(hi-1-j) / 2^hi is in [0.5, 1)
(exact product), a degree-3 relative-minimax polynomial (constants fitted here by iteratively
reweighted least squares on 2000 Chebyshev nodes of [0.5, 1]; max relative error 1.7e-3 for 1/u,
4.8e-4 for 1/sqrt(u)) plus one Newton step gives 1/U or 1/sqrt(U) to ~3e-6 relative, and the
scale 2^(-e) or 2^(-e/2) (parity included) is a public per-bit weight sum_j h_j c_j over the
one-hot leading bit. Measured on [1e-3, 1e6] (dry run, error beyond one output ulp, relative):
reciprocal 3.0e-6 (f=16 and 20), rsqrt 2.0e-7 (f=16), 3.2e-7 (f=20); max abs error 2.7e-3 for
reciprocal (at 1/x = 1000) and 2.0e-5 for rsqrt. reciprocal 37 rounds, rsqrt 40.
"""

from __future__ import annotations

import math

import torch

from privinfer.mpc.protocols.arith import mul_bits, raw_mul_many, trunc_many
from privinfer.mpc.protocols.boolean import a2b, bits_to_arith, or_, suffix_or
from privinfer.mpc.protocols.compare import clip_public, ltz
from privinfer.mpc.protocols.poly import poly_eval
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import RShare

EXP_WORK_BITS = 30
EXP_HALVINGS = 6
NEWTON_WORK_BITS = 28
RECIP_COEFFS = [5.656769500286503, -11.757037669626227, 10.647725399542704, -3.5491893281338402]
RSQRT_COEFFS = [2.605296186092406, -3.6395804583142075, 2.9904354698437356, -0.9566299520293338]


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
    """(Taylor(x / 2^6))^(2^6) at 30 working bits; accurate for x in [-16, 0]."""
    # y = x / 2^6 is the same ring value read with f + 6 fractional bits; lift to 30 bits.
    y = x.mul_ring(1 << (EXP_WORK_BITS - x.f - EXP_HALVINGS)).with_f(EXP_WORK_BITS)
    w = EXP_WORK_BITS
    sq, sixth = raw_mul_many(party, [(y, y)])[0], y.mul_ring(round(2**w / 6)).with_f(2 * w)
    y2, y6 = trunc_many(party, [sq, sixth], w)
    (q,) = trunc_many(party, raw_mul_many(party, [(y2, y6.add_public(0.5))]), w)
    p = (y + q).add_public(1.0)
    for k in range(EXP_HALVINGS):
        (raw,) = raw_mul_many(party, [(p, p)])
        (p,) = trunc_many(party, [raw], w if k < EXP_HALVINGS - 1 else out_f)
    return p


def normalise_by_bit_length(
    party: Party,
    x: RShare,
    lo: int,
    hi: int,
    work_bits: int = NEWTON_WORK_BITS,
    in_range: bool = False,
) -> tuple[RShare, RShare]:
    """For a positive ring value X, clamp X to [2^lo, 2^hi - 1] and return (U, h): U = X / 2^(j+1)
    in [0.5, 1) at `work_bits`, and h (f=0, last dim hi - lo) the one-hot of j - lo.
    `in_range`: the caller guarantees 2^lo <= X < 2^hi (e.g. a softmax row sum), so the suffix OR
    covers only the window (ceil(log2(hi - lo)) rounds instead of 6) and no clamp round."""
    if not 0 <= lo < hi - 1 or hi > 61:
        raise ValueError("need 0 <= lo < hi - 1 and hi <= 61")
    if in_range:
        window = ((1 << hi) - 1) & ~((1 << lo) - 1)
        s = a2b(party, x).and_public(window)
        k = 1
        while k < hi - lo:
            s = or_(party, s, s.rshift(k))
            k *= 2
        h = bits_to_arith(party, (s ^ s.rshift(1)).and_public(window), list(range(lo, hi)))
        return _normalised(party, x.with_f(0), h, lo, hi, work_bits), h
    s = suffix_or(party, a2b(party, x))
    # one-hot leading bit within [lo, hi): s_j ^ s_{j+1}, with s_{hi-1} alone at the top and
    # NOT s_{lo+1} at the bottom (values below 2^lo are clamped up to 2^lo).
    onehot = s ^ s.rshift(1)
    top = 1 << (hi - 1)
    mid_mask = ((1 << (hi - 1)) - 1) & ~((1 << (lo + 1)) - 1)
    word = onehot.and_public(mid_mask) ^ s.and_public(top)
    word = word ^ s.rshift(1).and_public(1 << lo).xor_public(1 << lo)
    # flags: s_hi (X >= 2^hi, or negative) goes to bit hi, s_lo (X >= 2^lo) to bit 63
    word = word ^ s.and_public(1 << hi) ^ s.and_public(1 << lo).lshift(63 - lo)
    positions = list(range(lo, hi))
    bits = bits_to_arith(party, word, positions + [hi, 63])
    h = bits.map(lambda t: t[..., : hi - lo])
    over = bits.map(lambda t: t[..., hi - lo])
    under = (-bits.map(lambda t: t[..., hi - lo + 1])).add_ring(1)
    xi = x.with_f(0)
    (fix,) = mul_bits(
        party,
        RShare.stack([over, under]),
        [RShare.stack([(-xi).add_ring((1 << hi) - 1), (-xi).add_ring(1 << lo)])],
    )
    xc = xi + fix.map(lambda t: t[0]) + fix.map(lambda t: t[1])
    return _normalised(party, xc, h, lo, hi, work_bits), h


def _normalised(party: Party, xc: RShare, h: RShare, lo: int, hi: int, work_bits: int) -> RShare:
    """U = X * 2^(hi - 1 - j) / 2^hi at `work_bits`, j the leading bit given by one-hot h."""
    weights = torch.tensor([1 << (hi - 1 - j) for j in range(lo, hi)], dtype=torch.int64)
    m = h.mul_ring(weights).map(lambda t: t.sum(-1))
    (u_raw,) = raw_mul_many(party, [(xc, m)])
    if hi >= work_bits:
        (u,) = trunc_many(party, [u_raw.with_f(hi)], work_bits)
    else:
        u = u_raw.mul_ring(1 << (work_bits - hi)).with_f(work_bits)
    return u


def _scale_result(
    party: Party, v: RShare, h: RShare, lo: int, hi: int, scale_fn, out_f: int
) -> RShare:  # type: ignore[no-untyped-def]
    """v * sum_j h_j * scale_fn(j) truncated to out_f, with integer weights at G bits."""
    g = out_f + 3
    weights = torch.tensor([round(2.0**g * scale_fn(j)) for j in range(lo, hi)], dtype=torch.int64)
    w = h.mul_ring(weights).map(lambda t: t.sum(-1))
    (raw,) = raw_mul_many(party, [(v, w)])
    (out,) = trunc_many(party, [raw.with_f(v.f + g)], out_f)
    return out


def _work_bits(g: int, max_scale: float) -> int:
    """Newton working precision such that (1/U at w bits) * (largest weight) stays < 2^61."""
    w = min(NEWTON_WORK_BITS, 60 - g - math.ceil(math.log2(max_scale)))
    if w < 16:
        raise ValueError("reciprocal/rsqrt range too wide for this precision")
    return w


def reciprocal(
    party: Party,
    x: RShare,
    lo: int | None = None,
    hi: int | None = None,
    out_f: int | None = None,
    times: float = 1.0,
    in_range: bool = False,
) -> RShare:
    """1/x for x > 0 (`in_range`: the caller guarantees 2^lo <= X < 2^hi, 4 rounds fewer). Default range: ring values [2^(f-10), 2^(f+24)), i.e. ~[1e-3, 1.6e7];
    outside it the input saturates to the nearest end. The result is multiplied by the public
    `times` for free (folded into the per-bit weights)."""
    f = x.f
    out_f = f if out_f is None else out_f
    lo = max(0, f - 10) if lo is None else lo
    hi = min(61, f + 24) if hi is None else hi
    w = _work_bits(out_f + 3, times * 2.0 ** (f - lo - 1))
    with party.op("reciprocal"):
        u, h = normalise_by_bit_length(party, x, lo, hi, w, in_range)
        y = poly_eval(party, u, RECIP_COEFFS, w)
        (uy,) = trunc_many(party, raw_mul_many(party, [(u, y)]), w)
        (y,) = trunc_many(party, raw_mul_many(party, [(y, (-uy).add_public(2.0))]), w)
        return _scale_result(party, y, h, lo, hi, lambda j: times * 2.0 ** (f - j - 1), out_f)


def rsqrt(
    party: Party,
    x: RShare,
    lo: int | None = None,
    hi: int | None = None,
    out_f: int | None = None,
    times: float = 1.0,
) -> RShare:
    """1/sqrt(x) for x > 0. Default range: ring values [2^(f-10), 2^(f+24)), i.e.
    ~[1e-3, 1.6e7]; outside it the input saturates to the nearest end."""
    f = x.f
    out_f = f if out_f is None else out_f
    lo = max(0, f - 10) if lo is None else lo
    hi = min(61, f + 24) if hi is None else hi
    w = _work_bits(out_f + 3, times * 2.0 ** ((f - lo - 1) / 2))
    with party.op("rsqrt"):
        u, h = normalise_by_bit_length(party, x, lo, hi, w)
        y = poly_eval(party, u, RSQRT_COEFFS, w)
        (y2,) = trunc_many(party, raw_mul_many(party, [(y, y)]), w)
        (uy2,) = trunc_many(party, raw_mul_many(party, [(u, y2)]), w)
        (raw,) = raw_mul_many(party, [(y, (-uy2).add_public(3.0))])
        (y,) = trunc_many(party, [raw], w - 1)  # y (3 - u y^2) / 2: the /2 folded in
        y = y.with_f(w)
        return _scale_result(party, y, h, lo, hi, lambda j: times * 2.0 ** ((f - j - 1) / 2), out_f)
