"""Correlated randomness made by the two parties from random OTs, no dealer (offline phase;
semi-honest; computational security of the OTs, no statistical error).

AND triples (boolean, a, b, c with c = a b over xor shares): two random OTs each, no further
messages. With party 0 sending in a random OT (m0, m1) and party 1 receiving with choice c1:
a0 = m0 xor m1 and b1 = c1 give a0 b1 = m0 xor m_{c1}; the other direction gives a1 b0.
Beaver triples (arithmetic, c = a b mod 2^64): Gilboa's product by correlated OT on the random
choice bits of 64 random OTs per cross term; the sender answers each with one word
(w_i = k1_i - k0_i - a 2^i), one flight in both directions at once: 128 random OTs and 1 KB per
triple (each way), one round plus the extension. Square pairs (a, a^2) need one cross term:
64 random OTs and 512 bytes one way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from privinfer.twopc.ot import _u64

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

_POW2 = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)


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
        k0 = _u64(m0).reshape(n, 64)
        k1 = _u64(m1).reshape(n, 64)
        w = k1 - k0 - a[:, None] * _POW2
        got = party.exchange_array(w, np.uint64, 64 * n).reshape(n, 64)
        bits = c.reshape(n, 64).astype(np.uint64)
        b = (bits * _POW2).sum(axis=1, dtype=np.uint64)
        mine_as_sender = np.zeros(n, np.uint64) - k0.sum(axis=1, dtype=np.uint64)
        mine_as_receiver = (_u64(mc).reshape(n, 64) - bits * got).sum(axis=1, dtype=np.uint64)
        return a, b, a * b + mine_as_sender + mine_as_receiver


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
            party.exchange(k1 - k0 - a[:, None] * _POW2)
            cross = np.zeros(n, np.uint64) - k0.sum(axis=1, dtype=np.uint64)
        else:
            c, mc = party.ot.take_recv(64 * n)
            got = party.exchange_array(np.zeros(0, np.uint64), np.uint64, 64 * n).reshape(n, 64)
            bits = c.reshape(n, 64).astype(np.uint64)
            a = (bits * _POW2).sum(axis=1, dtype=np.uint64)
            cross = (_u64(mc).reshape(n, 64) - bits * got).sum(axis=1, dtype=np.uint64)
        return a, a * a + np.uint64(2) * cross
