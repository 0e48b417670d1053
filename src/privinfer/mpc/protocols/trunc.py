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
from dataclasses import dataclass

import numpy as np
import torch

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
    sizes = [x.a.numel() for x in xs]
    flat = RShare(
        torch.cat([x.a.reshape(-1) for x in xs]),
        torch.cat([x.b.reshape(-1) for x in xs]),
        party.pid,
        xs[0].f,
    )
    consts = _mixed_consts(tuple(zip(sizes, shifts, strict=True)))
    with party.op("trunc"):
        out = _trunc(party, flat, consts)
    res, off = [], 0
    for x, s, n in zip(xs, shifts, sizes, strict=True):
        res.append(
            RShare(
                out.a[off : off + n].view(x.shape),
                out.b[off : off + n].view(x.shape),
                party.pid,
                x.f - s,
            )
        )
        off += n
    return res


@dataclass(frozen=True)
class _Consts:
    """Public constants of one truncation layout, as uint64 (a scalar, or one per element of a
    mixed layout): the shift s, the offset 2^62 + 2^s added before shifting, the wrap weight
    2^(64-s) and the offset's image 2^(62-s) removed after."""

    s: np.uint64 | np.ndarray
    offset: np.uint64 | np.ndarray
    hi: np.uint64 | np.ndarray
    low: np.uint64 | np.ndarray


_CACHE_MAX = 128
_CACHE_MAX_ELEMENTS = 1 << 14
_mixed_cache: dict[tuple[tuple[int, int], ...], _Consts] = {}
_ONE = np.uint64(1)


def _consts(s: np.uint64 | np.ndarray) -> _Consts:
    return _Consts(
        s,
        (_ONE << np.uint64(HEADROOM_BITS)) + (_ONE << s),
        _ONE << (np.uint64(64) - s),
        _ONE << (np.uint64(HEADROOM_BITS) - s),
    )


def _mixed_consts(layout: tuple[tuple[int, int], ...]) -> _Consts:
    """The per-element constants for (size, shift) blocks; public, cached per layout while
    small (decode-sized: a big layout's constants cost little next to its truncation, and
    caching them would hold memory)."""
    got = _mixed_cache.get(layout)
    if got is None:
        got = _consts(np.concatenate([np.full(n, k, dtype=np.uint64) for n, k in layout]))
        if sum(n for n, _ in layout) <= _CACHE_MAX_ELEMENTS:
            if len(_mixed_cache) >= _CACHE_MAX:
                _mixed_cache.clear()
            _mixed_cache[layout] = got
    return got


def _int_consts(s: int) -> _Consts:
    return _consts(np.uint64(s))


def _u64(t: torch.Tensor) -> np.ndarray:
    """The words of a flat int64 tensor as a uint64 numpy view: + - * wrap mod 2^64 exactly as
    int64 does (same bits), and >> is the logical shift."""
    return t.numpy().view(np.uint64)


def _t64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.view(np.int64))


def _trunc(party: Party, x: RShare, c: int | _Consts) -> RShare:
    """The protocol on flat uint64 numpy views (numpy is several times cheaper per operation than
    torch on the small tensors of a decode step; the values are the same ring elements)."""
    i = party.pid
    shape = x.shape
    n = x.a.numel()
    flat = (n,)
    k = c if isinstance(c, _Consts) else _int_consts(c)
    s, hi, sixty_three = k.s, k.hi, np.uint64(63)
    # Beaver round: party 2 deals a triple for msb(a) * msb(b) between parties 0 and 1.
    if i == 0:
        a = _u64(x.a.reshape(-1)) + _u64(x.b.reshape(-1)) + k.offset
        u = a >> sixty_three
        ac = party.rand.prev.draw_words(2 * n)  # key shared with party 2
        a0, c0 = ac[:n], ac[n:]
        e = u - a0
        fv = _u64(party.exchange({1: _t64(e)}, {1: flat})[1])
        w0 = u * fv + c0  # e fv + a0 fv + c0, with e + a0 = u
        y = (a >> s) - (u - w0) * hi - k.low
    elif i == 1:
        b = _u64(x.b.reshape(-1))
        v = b >> sixty_three
        b1 = party.rand.next.draw_words(n)  # key shared with party 2
        fv = v - b1
        got = party.exchange({0: _t64(fv)}, {0: flat, 2: flat})
        w1 = _u64(got[0]) * b1 + _u64(got[2])
        y = (b >> s) - (v - w1) * hi
    else:
        b1 = party.rand.prev.draw_words(n)  # key shared with party 1
        ac = party.rand.next.draw_words(2 * n)  # key shared with party 0
        party.exchange({1: _t64(ac[:n] * b1 - ac[n:])}, {})
        y = None
    # Reshare the 2-out-of-2 result into replicated form (zero share: next draw - prev draw).
    zn = party.rand.next.draw_words(n)
    zero = zn - party.rand.prev.draw_words(n)
    t = _t64(zero if y is None else y + zero)
    t_next = party.send_prev_recv_next(t)
    f = x.f - int(s) if isinstance(c, int) else x.f
    return RShare(t.view(shape), t_next.view(shape), i, f)
