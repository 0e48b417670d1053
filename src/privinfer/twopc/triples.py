"""Correlated randomness made by the two parties from random OTs, no dealer (offline phase;
semi-honest; computational security of the OTs, no statistical error).

AND triples (boolean, a, b, c with c = a b over xor shares): two random OTs each, no further
messages. With party 0 sending in a random OT (m0, m1) and party 1 receiving with choice c1:
a0 = m0 xor m1 and b1 = c1 give a0 b1 = m0 xor m_{c1}; the other direction gives a1 b0.
Beaver triples (arithmetic, c = a b mod 2^64): Gilboa's product by correlated OT on the random
choice bits of 64 random OTs per cross term; the sender answers bit i with
w_i = k1_i - k0_i - a, of which the receiver uses (k_{b_i} - b_i w_i) 2^i, so only the low
64 - i bits travel (CrypTFlow2's trick, here in three widths: 352 bytes per cross term instead
of 512). One flight in both directions at once: 128 random OTs and 352 bytes each way per
triple, one round plus the extension. Square pairs (a, a^2) need one cross term: 64 random OTs
and 352 bytes one way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from privinfer.net.peer import PeerError
from privinfer.twopc.ot import _u64

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

_POW2 = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)
_SHIFTS = np.arange(64, dtype=np.uint64)


_TIERS = ((0, 32, np.uint64), (32, 48, np.uint32), (48, 64, np.uint16))


def gilboa_corrections(k_zero: np.ndarray, k_one: np.ndarray, v: np.ndarray) -> bytes:
    """The sender's corrections w_i = k_one_i - k_zero_i - v for bit i of the receiver's
    factor, (n, 64) words, sent with only the bits that matter after the receiver's shift by
    i: 64 bits for i < 32, 32 for i < 48, 16 above (352 bytes per 64 bits instead of 512)."""
    w = k_one - k_zero - np.asarray(v, np.uint64)[:, None]
    return b"".join(np.ascontiguousarray(w[:, lo:hi].astype(t)).tobytes() for lo, hi, t in _TIERS)


GILBOA_BYTES = sum((hi - lo) * np.dtype(t).itemsize for lo, hi, t in _TIERS)


def gilboa_receive(payload: bytes, n: int) -> np.ndarray:
    """Unpack `gilboa_corrections` into (n, 64) words (high bits beyond the sent width are
    garbage that the receiver's shift by i discards)."""
    out = np.empty((n, 64), np.uint64)
    pos = 0
    for lo, hi, t in _TIERS:
        size = n * (hi - lo) * np.dtype(t).itemsize
        out[:, lo:hi] = np.frombuffer(payload[pos : pos + size], t).reshape(n, hi - lo)
        pos += size
    return out


def gilboa_sender_share(k_zero: np.ndarray) -> np.ndarray:
    """The sender's share of sum_i b_i v 2^i: -sum_i k_zero_i 2^i."""
    return np.zeros(k_zero.shape[0], np.uint64) - (k_zero << _SHIFTS).sum(axis=1, dtype=np.uint64)


def gilboa_receiver_share(k_chosen: np.ndarray, bits: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The receiver's share: sum_i (k_chosen_i - b_i w_i) 2^i."""
    b = bits.astype(np.uint64)
    return ((k_chosen - b * w) << _SHIFTS).sum(axis=1, dtype=np.uint64)


def and_triples(party: TwoParty, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n boolean triples (a, b, c), each (n,) uint8 0/1, xor-shared. No message beyond OT
    extension."""
    with party.offline_phase():
        party.ot.reserve(n, n)
        m0, m1 = party.ot.take_send(n)
        c, mc = party.ot.take_recv(n)
        x0, x1, xc = m0[:, 0] & 1, m1[:, 0] & 1, mc[:, 0] & 1
        a = x0 ^ x1
        b = c.astype(np.uint8)
        return a, b, (a & b) ^ x0 ^ xc


def beaver_triples(party: TwoParty, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n arithmetic triples (a, b, c = a b) in Z_2^64, additively shared. Offline: 2 x 64 n
    random OTs, then one round of 512 n bytes each way."""
    with party.offline_phase():
        party.ot.reserve(64 * n, 64 * n)
        m0, m1 = party.ot.take_send(64 * n)
        c, mc = party.ot.take_recv(64 * n)
        a = party.private_random_u64(n)
        k0, k1 = _u64(m0).reshape(n, 64), _u64(m1).reshape(n, 64)
        got = party.exchange(gilboa_corrections(k0, k1, a))
        if len(got) != n * GILBOA_BYTES:
            raise PeerError(party.peer, "payload has the wrong length")
        bits = c.reshape(n, 64)
        b = (bits.astype(np.uint64) * _POW2).sum(axis=1, dtype=np.uint64)
        mine_as_receiver = gilboa_receiver_share(
            _u64(mc).reshape(n, 64), bits, gilboa_receive(got, n)
        )
        return a, b, a * b + gilboa_sender_share(k0) + mine_as_receiver


def square_pairs(party: TwoParty, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n pairs (a, a^2) in Z_2^64, additively shared: the one cross term a0 a1 by Gilboa with
    party 0 sending (64 random OTs, one direction), so half a Beaver triple's cost: one round
    of 512 n bytes from party 0."""
    with party.offline_phase():
        party.ot.reserve(64 * n, 0)
        a = party.private_random_u64(n)
        if party.pid == 0:
            m0, m1 = party.ot.take_send(64 * n)
            k0, k1 = _u64(m0).reshape(n, 64), _u64(m1).reshape(n, 64)
            party.exchange(gilboa_corrections(k0, k1, a))
            cross = gilboa_sender_share(k0)
        else:
            c, mc = party.ot.take_recv(64 * n)
            got = party.exchange(b"")
            if len(got) != n * GILBOA_BYTES:
                raise PeerError(party.peer, "payload has the wrong length")
            bits = c.reshape(n, 64)
            a = (bits.astype(np.uint64) * _POW2).sum(axis=1, dtype=np.uint64)
            cross = gilboa_receiver_share(_u64(mc).reshape(n, 64), bits, gilboa_receive(got, n))
        return a, a * a + np.uint64(2) * cross
