"""IKNP OT extension (Ishai, Kilian, Nissim, Petrank, CRYPTO 2003), semi-honest: 128 base OTs
turn into any number of Delta-correlated OTs, hashed into random OTs (computational: AES-128 as
PRG and the fixed-key TCCR hash of `aes.py`; 128-bit; statistical error 0).

The extension sender S holds Delta = s (128 random bits) and, from the base OTs in which S was
the receiver with choices s, one seed k_j^{s_j} per column j. The extension receiver R holds both
seeds of every column and picks random choice bits r (n of them). Per batch of n:
  R: t_j = PRG(k_j^0), u_j = t_j xor PRG(k_j^1) xor r                     -> u (128 x n bits)
  S: q_j = PRG(k_j^{s_j}) xor s_j u_j = t_j xor s_j r
Transposed, row i satisfies q_i = t_i xor r_i Delta (a correlated OT); the random OT is
S: (H(q_i, i), H(q_i xor Delta, i)), R: (r_i, H(t_i, i)). Cost: 16 bytes per OT from R to S,
one flight. The bit-matrix transposes are numpy unpack/transpose/pack in chunks.
"""

from __future__ import annotations

import numpy as np

from privinfer.twopc.aes import prg, tccr_hash

KAPPA = 128
CHUNK = 1 << 15  # OTs per transpose chunk


def transpose_bits(cols: np.ndarray) -> np.ndarray:
    """(128, n/8) uint8 bit columns -> (n, 16) uint8 rows (bit j of row i = bit i of column j,
    little-endian bit order on both sides)."""
    n = cols.shape[1] * 8
    out = np.empty((n, KAPPA // 8), dtype=np.uint8)
    step = CHUNK // 8
    for start in range(0, cols.shape[1], step):
        bits = np.unpackbits(cols[:, start : start + step], axis=1, bitorder="little")
        rows = np.packbits(np.ascontiguousarray(bits.T), axis=1, bitorder="little")
        out[start * 8 : start * 8 + rows.shape[0]] = rows
    return out


def _check_n(n: int) -> None:
    if n <= 0 or n % KAPPA:
        raise ValueError("IKNP batches must be a positive multiple of 128")


class IknpSender:
    """S: `delta_bits` are its base-OT choices, `seeds` the (128, 16) keys it received."""

    def __init__(self, delta_bits: np.ndarray, seeds: np.ndarray) -> None:
        self.s = np.asarray(delta_bits, dtype=np.uint8)
        self.delta = np.packbits(self.s, bitorder="little")
        self.seeds = [bytes(k) for k in seeds]
        self.batches = 0

    def extend(self, n: int, u: bytes, tweaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Random-OT messages (m0, m1), each (n, 16) uint8, from R's message `u`."""
        _check_n(n)
        if len(u) != KAPPA * n // 8:
            raise ValueError("IKNP message has the wrong length")
        u_cols = np.frombuffer(u, dtype=np.uint8).reshape(KAPPA, n // 8)
        q = np.empty((KAPPA, n // 8), dtype=np.uint8)
        for j in range(KAPPA):
            q[j] = prg(self.seeds[j], self.batches, n // 8)
            if self.s[j]:
                q[j] ^= u_cols[j]
        self.batches += 1
        rows = transpose_bits(q)
        return tccr_hash(rows, tweaks), tccr_hash(rows ^ self.delta, tweaks)


class IknpReceiver:
    """R: `seeds0`, `seeds1` are both (128, 16) base-OT keys it sent."""

    def __init__(self, seeds0: np.ndarray, seeds1: np.ndarray) -> None:
        self.seeds = [(bytes(a), bytes(b)) for a, b in zip(seeds0, seeds1, strict=True)]
        self.batches = 0

    def extend(
        self, n: int, r_bits: np.ndarray, tweaks: np.ndarray
    ) -> tuple[bytes, np.ndarray]:
        """(message u for S, H(t_i, i) rows (n, 16)) for choice bits `r_bits` (n,)."""
        _check_n(n)
        r = np.packbits(np.asarray(r_bits, dtype=np.uint8), bitorder="little")
        t = np.empty((KAPPA, n // 8), dtype=np.uint8)
        u = np.empty((KAPPA, n // 8), dtype=np.uint8)
        for j, (k0, k1) in enumerate(self.seeds):
            t[j] = prg(k0, self.batches, n // 8)
            u[j] = t[j] ^ prg(k1, self.batches, n // 8) ^ r
        self.batches += 1
        return u.tobytes(), tccr_hash(transpose_bits(t), tweaks)
