"""Deterministic-correctness truncation of replicated shares by a public shift (semi-honest,
honest majority: party 2 acts as a helper that sees nothing).

Method (the MSB-known local truncation; cf. Escudero et al., CRYPTO 2020, and the
"known-MSB" wrap trick): shift x' = x + 2^62 + 2^s into [0, 2^63). Parties 0 and 1 hold an
additive split x' = a + b (a = x_0 + x_1 at party 0, b = x_2 at party 1, no communication). As
unsigned integers a + b = x' + w 2^64, and because x' < 2^63 the wrap is w = msb(a) OR msb(b).
The product msb(a) * msb(b) is computed in one round with a Beaver triple that party 2 deals
from its pairwise keys (it learns nothing: it only sends). Then
    floor(x'/2^s) = (a >> s) + (b >> s) - w 2^(64-s) + carry,   carry in {0, 1},
and the result (without the carry) is reshared into replicated form (second round).

Correctness: exact up to the dropped carry for every |x| < 2^62 - 2^s: there is no wrap failure
at all (`trunc_failure_probability` is 0 in that range, 1 beyond it). Because the carry is 1
with probability 1 - (x' mod 2^s + 1)/2^s, adding 2^s before shifting makes the result an
unbiased stochastic rounding of x/2^s when the input's components are random (any reshared
value): error in (-1, +1] ulp, mean ~ 0. (If component x_2 is 0, as right after `share_from`,
the carry is always 0 and the result is floor(x/2^s) + 1: error in (0, 1].)
Cost: 2 rounds; bytes sent per element: party 0 and 1: 16, party 2: 16. `trunc_mixed`
truncates several tensors by different public shifts in the same 2 rounds (per-element shifts).
"""

from __future__ import annotations

import math

import torch

from privinfer.mpc.ring import logical_rshift, msb
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import RShare

HEADROOM_BITS = 62


def trunc_failure_probability(bound_bits: int, f: int, ring_bits: int = 64) -> float:
    """Per-element probability that truncating a value with |x| < 2^bound_bits (bound_bits
    counts integer plus fractional bits) by f bits returns a wrong result (beyond +-1 ulp).

    For this module's method it is 0 while 2^bound_bits + 2^f <= 2^(ring_bits-2) and 1 beyond
    (the shifted value no longer has a known MSB). For comparison, ABY3/SecureML local
    truncation fails with probability 2^(bound_bits + 1 - ring_bits) per element.
    """
    if 2.0**bound_bits + 2.0**f <= 2.0 ** (ring_bits - 2):
        return 0.0
    return 1.0


def aby3_local_trunc_failure_probability(bound_bits: int, ring_bits: int = 64) -> float:
    """Failure probability of the ABY3 / SecureML local truncation, for reference."""
    return min(1.0, math.ldexp(1.0, bound_bits + 1 - ring_bits))


def trunc(party: Party, x: RShare, shift: int) -> RShare:
    """Shares of round(x / 2^shift) (stochastic, error in (-1, 1] ulp); keeps `x.f - shift`
    fractional bits. Input range |x| < 2^62 - 2^shift as ring integers."""
    if shift == 0:
        return x
    if not 0 < shift < 62:
        raise ValueError("truncation shift must lie in (0, 62)")
    with party.op("trunc"):
        return _trunc(party, x, shift)


def trunc_mixed(party: Party, xs: list[RShare], shifts: list[int]) -> list[RShare]:
    """Truncate xs[k] by shifts[k] (each in (0, 62); same input range as `trunc`), all in one
    2-round call: the shift is a public per-element tensor."""
    if any(not 0 < s < 62 for s in shifts):
        raise ValueError("truncation shift must lie in (0, 62)")
    flat = RShare.cat([x.map(lambda t: t.reshape(-1)) for x in xs])
    per = torch.cat(
        [torch.full((x.a.numel(),), s, dtype=torch.int64) for x, s in zip(xs, shifts, strict=True)]
    )
    with party.op("trunc"):
        out = _trunc(party, flat, per)
    res, off = [], 0
    for x, s in zip(xs, shifts, strict=True):
        n = x.a.numel()
        res.append(
            RShare(
                out.a[off : off + n].reshape(x.shape),
                out.b[off : off + n].reshape(x.shape),
                party.pid,
                x.f - s,
            )
        )
        off += n
    return res


def _rshift(a: torch.Tensor, s: int | torch.Tensor) -> torch.Tensor:
    """Logical right shift by an int or a per-element tensor of shifts in (0, 64)."""
    if isinstance(s, int):
        return logical_rshift(a, s)
    return (a >> s) & ((torch.ones_like(s) << (64 - s)) - 1)


def _trunc(party: Party, x: RShare, s: int | torch.Tensor) -> RShare:
    i = party.pid
    shape = x.shape
    one = 1 if isinstance(s, int) else torch.ones_like(s)
    offset = (one << HEADROOM_BITS) + (one << s)
    hi = one << (64 - s)
    # Beaver round: party 2 deals a triple for msb(a) * msb(b) between parties 0 and 1.
    if i == 0:
        a = x.a + x.b + offset
        u = msb(a)
        a0, c0 = party.rand.prev.draw((2, *shape))  # key shared with party 2
        e = u - a0
        fv = party.exchange({1: e}, {1: shape})[1]
        w0 = e * fv + a0 * fv + c0
        y = _rshift(a, s) - (u - w0) * hi - (one << (HEADROOM_BITS - s))
    elif i == 1:
        b = x.b
        v = msb(b)
        b1 = party.rand.next.draw(shape)  # key shared with party 2
        fv = v - b1
        got = party.exchange({0: fv}, {0: shape, 2: shape})
        w1 = got[0] * b1 + got[2]
        y = _rshift(b, s) - (v - w1) * hi
    else:
        b1 = party.rand.prev.draw(shape)  # key shared with party 1
        a0, c0 = party.rand.next.draw((2, *shape))  # key shared with party 0
        party.exchange({1: a0 * b1 - c0}, {})
        y = torch.zeros(shape, dtype=torch.int64)
    # Reshare the 2-out-of-2 result into replicated form.
    t = y + party.rand.zero_share(shape)
    t_next = party.send_prev_recv_next(t)
    return RShare(t, t_next, i, x.f - s if isinstance(s, int) else x.f)
