"""Products of shared values (Beaver triples made by Gilboa's OT multiplication, no dealer) and
of a shared value by one party's private value (Gilboa online), with truncation (semi-honest;
computational security of the OTs; products exact mod 2^64, then `trunc`'s <= 1 ulp).

mul: open e = x - a, f = y - b (1 round, 16 bytes per element each way), z = c + e b + f a
(+ e f at party 0), then truncate by f bits (1 round): 2 online rounds. Offline: one Beaver
triple (2 x 64 random OTs, 512 bytes each way). mul_private: x * w for w held by `owner`:
square: a square pair (a, a^2) instead of a triple, 8 bytes each way online, half the offline.
mul_private: owner's own share times w locally, the other share's 64 bits choose in 64 correlated OTs
(w 2^i, corrections cut to 64 - i bits): 2 rounds + truncation (1), 8 bytes up and 352
bytes down per element online.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from privinfer.net.peer import PeerError
from privinfer.twopc.ot import _u64
from privinfer.twopc.triples import (
    _SHIFTS,
    GILBOA_BYTES,
    beaver_triples,
    gilboa_corrections,
    gilboa_receive,
    gilboa_receiver_share,
    gilboa_sender_share,
    square_pairs,
)
from privinfer.twopc.trunc import trunc

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty


def mul_raw(party: TwoParty, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Shares of x * y mod 2^64, no truncation (1 online round)."""
    shape = x.shape
    x = np.asarray(x, np.uint64).reshape(-1)
    y = np.asarray(y, np.uint64).reshape(-1)
    n = x.size
    a, b, c = beaver_triples(party, n)
    opened = party.exchange_array(np.concatenate([x - a, y - b]), np.uint64, 2 * n)
    e = x - a + opened[:n]
    f = y - b + opened[n:]
    z = c + e * b + f * a
    if party.pid == 0:
        z += e * f
    return z.reshape(shape)


def mul(party: TwoParty, x: np.ndarray, y: np.ndarray, shift: int | None = None) -> np.ndarray:
    """Fixed-point product: x * y truncated by `shift` bits (default party.f). 2 rounds."""
    with party.op("mul"):
        return trunc(party, mul_raw(party, x, y), party.f if shift is None else shift)


def square(party: TwoParty, x: np.ndarray, shift: int | None = None) -> np.ndarray:
    """x^2 truncated by `shift` (default party.f) from a square pair (a, a^2): open e = x - a
    (8 bytes each way), x^2 = a^2 + 2 e a + e^2. 2 rounds; half `mul`'s offline cost."""
    with party.op("square"):
        shape = x.shape
        x = np.asarray(x, np.uint64).reshape(-1)
        a, a2 = square_pairs(party, x.size)
        e = x - a + party.exchange_array(x - a, np.uint64, x.size)
        z = a2 + np.uint64(2) * e * a
        if party.pid == 0:
            z += e * e
        return trunc(party, z, party.f if shift is None else shift).reshape(shape)


def mul_private(
    party: TwoParty, x: np.ndarray, w: np.ndarray | None, owner: int, shift: int | None = None
) -> np.ndarray:
    """Shares of x * w (elementwise, truncated by `shift`, default party.f), where `owner`
    holds the ring vector w (the other passes None) and x is shared. 3 rounds."""
    with party.op("mul_private"):
        shape = x.shape
        x = np.asarray(x, np.uint64).reshape(-1)
        n = x.size
        party.ot.reserve(*((64 * n, 0) if owner == 0 else (0, 64 * n)))
        if party.pid == owner:
            assert w is not None
            wv = np.asarray(w, np.uint64).reshape(-1)
            m0, m1 = party.ot.take_send(64 * n)
            got = party.exchange(b"")
            if len(got) != 8 * n:
                raise PeerError(party.peer, "payload has the wrong length")
            d = np.unpackbits(np.frombuffer(got, np.uint8), bitorder="little").reshape(n, 64)
            k0, k1 = _u64(m0).reshape(n, 64), _u64(m1).reshape(n, 64)
            k_zero, k_one = np.where(d == 1, k1, k0), np.where(d == 1, k0, k1)
            party.exchange(gilboa_corrections(k_zero, k_one, wv))
            z = x * wv + gilboa_sender_share(k_zero)
        else:
            c, mc = party.ot.take_recv(64 * n)
            bits = ((x[:, None] >> _SHIFTS) & np.uint64(1)).astype(np.uint8)
            party.exchange(np.packbits(bits.reshape(-1) ^ c, bitorder="little"))
            got = party.exchange(b"")
            if len(got) != n * GILBOA_BYTES:
                raise PeerError(party.peer, "payload has the wrong length")
            corr = gilboa_receive(got, n)
            z = gilboa_receiver_share(_u64(mc).reshape(n, 64), bits, corr)
        return trunc(party, z, party.f if shift is None else shift).reshape(shape)
