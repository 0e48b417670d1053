"""Millionaires' comparison, MSB/DReLU, AND, multiplexer and B2A on 2-out-of-2 shares
(CrypTFlow2 / Cheetah style; semi-honest; computational security of the OTs, 128-bit; exact,
no statistical error).

Millionaires (party 0 holds u, party 1 holds v, both < 2^bits): split into 4-bit blocks; for
each block one 1-out-of-16 OT gives xor shares of lt_j = [u_j < v_j] and eq_j = [u_j = v_j]
(party 0 masks its table with random bits); then a log-depth tree combines adjacent blocks:
lt = lt_hi xor eq_hi lt_lo, eq = eq_hi eq_lo, with AND triples (one round per level).
64-bit inputs: 16 OTs (2 rounds) and 4 AND levels (4 rounds): 6 rounds, ~30 ANDs.
MSB(x) = msb(x0) xor msb(x1) xor [2^63 - 1 - low63(x0) < low63(x1)]: one millionaires on 63 bits.
Multiplexer b * x (b xor-shared bit, x arithmetic): one OT per direction (`ot.shared_choice`),
1 round, 32 bytes per element each way. B2A: one OT, 1 round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from privinfer.twopc import ot
from privinfer.twopc.triples import and_triples

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

BLOCK_BITS = 4
_LOW63 = np.uint64((1 << 63) - 1)


def and_bits(party: TwoParty, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """xor shares of x AND y for xor-shared bit vectors (uint8 0/1), with AND triples from
    random OTs. One round, 2 bits each way per AND (bit-packed)."""
    n = x.size
    a, b, c = and_triples(party, n)
    e_f = np.concatenate([x ^ a, y ^ b]).astype(np.uint8)
    got = party.exchange(np.packbits(e_f, bitorder="little"))
    if len(got) != (2 * n + 7) // 8:
        from privinfer.net.peer import PeerError

        raise PeerError(party.peer, "payload has the wrong length")
    other = np.unpackbits(np.frombuffer(got, np.uint8), bitorder="little")[: 2 * n]
    ef = e_f ^ other
    e, f = ef[:n], ef[n:]
    z = c ^ (e & b) ^ (f & a)
    if party.pid == 0:
        z ^= e & f
    return z


def millionaires(party: TwoParty, value: np.ndarray, bits: int = 64) -> np.ndarray:
    """xor shares of [u < v], where party 0 passes u and party 1 passes v (uint64, < 2^bits).
    2 + ceil(log2(ceil(bits / 4))) rounds."""
    value = np.asarray(value, dtype=np.uint64).reshape(-1)
    n = value.size
    q = -(-bits // BLOCK_BITS)
    shifts = (np.arange(q, dtype=np.uint64) * np.uint64(BLOCK_BITS)).astype(np.uint64)
    blocks = ((value[:, None] >> shifts) & np.uint64(15)).astype(np.int64)  # (n, q)
    if party.pid == 0:
        rnd = party.private_random_bits(2 * n * q).reshape(2, n, q)
        xs = np.arange(16)
        lt_t = (blocks[..., None] < xs).astype(np.uint8) ^ rnd[0][..., None]
        eq_t = (blocks[..., None] == xs).astype(np.uint8) ^ rnd[1][..., None]
        table = (lt_t | (eq_t << 1)).reshape(n * q, 16)
        ot.choose_n(party, 0, n * q, BLOCK_BITS, 2, table, None)
        lt, eq = rnd[0], rnd[1]
    else:
        got = ot.choose_n(party, 0, n * q, BLOCK_BITS, 2, None, blocks.reshape(-1))
        assert got is not None
        lt, eq = (got & 1).reshape(n, q), (got >> 1).reshape(n, q)
    # tree: combine (hi, lo) pairs; lt of the whole = lt of the single remaining group
    while lt.shape[1] > 1:
        k = lt.shape[1] // 2
        lo, hi = np.arange(0, 2 * k, 2), np.arange(1, 2 * k, 2)
        # eq of the lowest group is never needed (it only multiplies nothing)
        eq_need = hi[1:]
        x = np.concatenate([eq[:, hi].reshape(-1), eq[:, eq_need].reshape(-1)])
        y = np.concatenate([lt[:, lo].reshape(-1), eq[:, eq_need - 1].reshape(-1)])
        z = and_bits(party, x, y)
        new_lt = lt[:, hi] ^ z[: n * k].reshape(n, k)
        new_eq = np.zeros((n, k), np.uint8)
        new_eq[:, 1:] = z[n * k :].reshape(n, k - 1)
        if lt.shape[1] % 2:
            new_lt = np.concatenate([new_lt, lt[:, -1:]], axis=1)
            new_eq = np.concatenate([new_eq, eq[:, -1:]], axis=1)
        lt, eq = new_lt, new_eq
    return lt[:, 0].copy()


def msb(party: TwoParty, x: np.ndarray, bits: int = 64) -> np.ndarray:
    """xor shares of bit `bits - 1` of shared ring values: with bits = 64 the sign ([x < 0]),
    exact on the whole ring; with fewer, the sign of a value the caller knows to lie in
    [-2^(bits-1), 2^(bits-1)) (the shares are reduced mod 2^bits locally, and the millionaires
    shrinks to bits - 1 bits). 2 + ceil(log2(ceil((bits - 1) / 4))) rounds: 6 for 64 bits."""
    if not 2 <= bits <= 64:
        raise ValueError("msb: bits must lie in [2, 64]")
    with party.op("msb"):
        x = np.asarray(x, dtype=np.uint64).reshape(-1)
        low_mask = np.uint64((1 << (bits - 1)) - 1)
        low = x & low_mask
        mine = low_mask - low if party.pid == 0 else low
        carry = millionaires(party, mine, bits - 1)
        return ((x >> np.uint64(bits - 1)).astype(np.uint8) & 1) ^ carry


def drelu(party: TwoParty, x: np.ndarray, bits: int = 64) -> np.ndarray:
    """xor shares of [x >= 0] (see `msb` for `bits`)."""
    b = msb(party, x, bits)
    return b ^ 1 if party.pid == 0 else b


def b2a(party: TwoParty, b: np.ndarray) -> np.ndarray:
    """Arithmetic shares (f = 0) of xor-shared bits: party 1's bit chooses between party 0's
    words b0 and 1 - b0 (`ot.shared_choice`). 1 round, 1 bit up and 32 bytes down per bit."""
    with party.op("b2a"):
        b = np.asarray(b, np.uint8).reshape(-1)
        n = b.size
        if party.pid == 0:
            b64 = b.astype(np.uint64)
            out, _ = ot.shared_choice(party, n, 0, b64, 1 - b64, np.zeros(0, np.uint8))
            return out
        empty = np.zeros(0, np.uint64)
        return ot.shared_choice(party, n, 0, empty, empty, b)[1]


def mux(party: TwoParty, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Arithmetic shares of b * x for xor-shared bits b and shared ring values x: in each
    direction the receiver's bit chooses between the sender's b_s x_s and (1 - b_s) x_s.
    1 round, 32 bytes each way per element."""
    with party.op("mux"):
        b = np.asarray(b, np.uint8).reshape(-1)
        x = np.asarray(x, np.uint64).reshape(-1)
        n = x.size
        b64 = b.astype(np.uint64)
        sent, received = ot.shared_choice(party, n, n, b64 * x, (1 - b64) * x, b)
        return sent + received


def select(party: TwoParty, b: np.ndarray, if_one: np.ndarray, if_zero: np.ndarray) -> np.ndarray:
    """b ? if_one : if_zero (b xor-shared). 1 round."""
    return if_zero + mux(party, b, if_one - if_zero)


def less_than(party: TwoParty, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """xor shares of [x < y], exact while |x - y| < 2^63 as ring integers."""
    return msb(party, x - y)


def relu(party: TwoParty, x: np.ndarray) -> np.ndarray:
    """max(x, 0), exact. 7 rounds."""
    with party.op("relu"):
        return mux(party, drelu(party, x), x)
