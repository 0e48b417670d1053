"""Truncation of shared fixed-point values by s bits (semi-honest; exact up to one unit in the
last place; computational security of the OTs; no failure probability).

With x' = x + 2^62 (party 0 adds the public offset, so 0 <= x' < 2^63 for |x| < 2^62), write
x' = x0 + x1 - w 2^64 with the wrap w = msb(x0) OR msb(x1) (x' has MSB 0). Then
floor(x' / 2^s) = (x0 >> s) + (x1 >> s) - w 2^(64 - s) + c, where c = [low_s(x0) + low_s(x1)
>= 2^s]. `trunc` drops c (result is floor(x / 2^s) or one less: at most one ulp low, never a
large error); `trunc(exact=True)` computes c with one s-bit millionaires and B2A.
w costs one OT (`ot.shared_choice`: party 1's msb chooses between party 0's words msb0 and 1):
1 round, 1 bit up and 32 bytes down per element.
Requires |x| < 2^62 (ring.encode saturates there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from privinfer.twopc import compare, ot

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

_OFFSET = np.uint64(1 << 62)


def trunc(party: TwoParty, x: np.ndarray, s: int, exact: bool = False) -> np.ndarray:
    """Shares of floor(x / 2^s) (signed), or one ulp less unless `exact`. 1 round (exact: 7
    more for the carry's millionaires and B2A)."""
    if s == 0:
        return x.copy()
    with party.op("trunc"):
        shape = x.shape
        x = np.asarray(x, np.uint64).reshape(-1)
        xp = x + _OFFSET if party.pid == 0 else x.copy()
        n = xp.size
        top = (xp >> np.uint64(63)).astype(np.uint8)
        empty = np.zeros(0, np.uint64)
        if party.pid == 0:
            w, _ = ot.shared_choice(
                party, n, 0, top.astype(np.uint64), np.ones(n, np.uint64), np.zeros(0, np.uint8)
            )
        else:
            _, w = ot.shared_choice(party, n, 0, empty, empty, top)
        su = np.uint64(s)
        out = (xp >> su) - w * (np.uint64(1) << np.uint64(64 - s))
        if exact:
            low = xp & np.uint64((1 << s) - 1)
            mine = np.uint64((1 << s) - 1) - low if party.pid == 0 else low
            out += compare.b2a(party, compare.millionaires(party, mine, s))
        if party.pid == 0:
            out -= _OFFSET >> su
        return out.reshape(shape)
