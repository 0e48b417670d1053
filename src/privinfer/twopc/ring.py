"""Additive 2-out-of-2 shares in Z_2^64 (numpy uint64) and fixed-point encoding (no secrets of
its own; a share alone is uniform, so it reveals nothing: information-theoretic).

A value v is encoded with f fractional bits as round(v * 2^f) in two's complement, saturated to
+-(2^62 - 1): truncation (trunc.py) needs |x| < 2^62. f = 16 by default, the precision the
three-party engine's dry run chose on SmolLM2 (activations up to ~2.5e4 keep x^2 * 2^32 under
2^62); protocols that need more (exp, reciprocal, rsqrt) work internally at `WORK_BITS`.
Shares are plain uint64 arrays; numpy's uint64 arithmetic on arrays wraps modulo 2^64.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

RING_BITS = 64
DEFAULT_FRAC_BITS = 16
WORK_BITS = 30
MAX_ABS = (1 << 62) - 1


def encode(x: np.ndarray | float, f: int) -> np.ndarray:
    """Reals -> uint64 ring elements with `f` fractional bits (round to nearest, saturate)."""
    scaled = np.clip(np.round(np.asarray(x, dtype=np.float64) * 2.0**f), -MAX_ABS, MAX_ABS)
    return np.nan_to_num(scaled).astype(np.int64).view(np.uint64)


def decode(x: np.ndarray, f: int) -> np.ndarray:
    """uint64 ring elements (signed two's complement) with `f` fractional bits -> float64."""
    return np.asarray(x, dtype=np.uint64).view(np.int64).astype(np.float64) / 2.0**f


def public(party: TwoParty, value: np.ndarray) -> np.ndarray:
    """A share of a public ring value: party 0 holds it, party 1 holds zero."""
    v = np.asarray(value, dtype=np.uint64)
    return v.copy() if party.pid == 0 else np.zeros_like(v)


def share_input(party: TwoParty, owner: int, value: np.ndarray | None, n: int) -> np.ndarray:
    """This party's share of the owner's ring vector of length `n` (no communication): the
    non-owner's share is the next n words of the session's shared PRG, the owner's is
    value - those words. The owner passes `value`; the other party passes None."""
    mask = party.shared_random_u64(n)
    if party.pid != owner:
        return mask
    if value is None or value.shape != (n,):
        raise ValueError("the owner must pass its input of length n")
    return np.asarray(value, dtype=np.uint64) - mask


def reveal(party: TwoParty, share: np.ndarray) -> np.ndarray:
    """Open a shared ring vector to both parties (one round, 8 bytes per element each way)."""
    share = np.ascontiguousarray(share, dtype=np.uint64)
    return share + party.exchange_array(share, np.uint64, share.size).reshape(share.shape)


def reveal_to(party: TwoParty, share: np.ndarray, receiver: int) -> np.ndarray | None:
    """Open a shared ring vector to `receiver` only (one flight); others get None."""
    share = np.ascontiguousarray(share, dtype=np.uint64)
    mine = share if party.pid != receiver else np.zeros(0, dtype=np.uint64)
    n_in = share.size if party.pid == receiver else 0
    got = party.exchange_array(mine, np.uint64, n_in)
    return share + got.reshape(share.shape) if party.pid == receiver else None


def shift_left(x: np.ndarray, s: int) -> np.ndarray:
    """Multiply a share by 2^s (exact, local)."""
    return x << np.uint64(s)


def mul_public(x: np.ndarray, c: np.ndarray | int) -> np.ndarray:
    """Multiply a share by a public ring integer (local; the result has f + f_c fraction bits)."""
    return x * np.asarray(c, dtype=np.int64).view(np.uint64)
