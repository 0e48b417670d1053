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
one flight. The bit-matrix transpose is done on 8x8 blocks packed in uint64 words (numpy).
"""

from __future__ import annotations

import numpy as np

from privinfer.twopc.aes import prg, tccr_hash

KAPPA = 128


def _transpose8x8(x: np.ndarray) -> np.ndarray:
    """Transpose the 8x8 bit matrix in each uint64 (byte r, bit c -> byte c, bit r)."""
    t = (x ^ (x >> np.uint64(7))) & np.uint64(0x00AA00AA00AA00AA)
    x = x ^ t ^ (t << np.uint64(7))
    t = (x ^ (x >> np.uint64(14))) & np.uint64(0x0000CCCC0000CCCC)
    x = x ^ t ^ (t << np.uint64(14))
    t = (x ^ (x >> np.uint64(28))) & np.uint64(0x00000000F0F0F0F0)
    return x ^ t ^ (t << np.uint64(28))


def transpose_bits(cols: np.ndarray) -> np.ndarray:
    """(128, n/8) uint8 bit columns -> (n, 16) uint8 rows (bit j of row i = bit i of column j,
    little-endian bit order on both sides), by 8x8 bit-block transposes on uint64 words."""
    nb = cols.shape[1]
    words = np.ascontiguousarray(cols.reshape(KAPPA // 8, 8, nb).transpose(0, 2, 1))
    t = _transpose8x8(words.view(np.uint64).reshape(KAPPA // 8, nb))
    rows = t.view(np.uint8).reshape(KAPPA // 8, nb, 8).transpose(1, 2, 0)
    return np.ascontiguousarray(rows).reshape(nb * 8, KAPPA // 8)


def transpose_bits_reference(cols: np.ndarray) -> np.ndarray:
    """`transpose_bits` by unpacking every bit (slow; the tests' reference)."""
    bits = np.unpackbits(cols, axis=1, bitorder="little")
    return np.packbits(np.ascontiguousarray(bits.T), axis=1, bitorder="little")


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
        rows = self.correlated(n, u)
        return tccr_hash(rows, tweaks), tccr_hash(rows ^ self.delta, tweaks)

    def correlated(self, n: int, u: bytes) -> np.ndarray:
        """Delta-correlated OT rows q_i (n, 16) uint8: R holds t_i = q_i xor r_i Delta."""
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
        return transpose_bits(q)


class IknpReceiver:
    """R: `seeds0`, `seeds1` are both (128, 16) base-OT keys it sent."""

    def __init__(self, seeds0: np.ndarray, seeds1: np.ndarray) -> None:
        self.seeds = [(bytes(a), bytes(b)) for a, b in zip(seeds0, seeds1, strict=True)]
        self.batches = 0

    def extend(self, n: int, r_bits: np.ndarray, tweaks: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(message u for S, H(t_i, i) rows (n, 16)) for choice bits `r_bits` (n,)."""
        u, t = self.correlated(n, r_bits)
        return u, tccr_hash(t, tweaks)

    def correlated(self, n: int, r_bits: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(message u for S, Delta-correlated rows t_i (n, 16) uint8) for choices `r_bits`."""
        _check_n(n)
        r = np.packbits(np.asarray(r_bits, dtype=np.uint8), bitorder="little")
        t = np.empty((KAPPA, n // 8), dtype=np.uint8)
        u = np.empty((KAPPA, n // 8), dtype=np.uint8)
        for j, (k0, k1) in enumerate(self.seeds):
            t[j] = prg(k0, self.batches, n // 8)
            u[j] = t[j] ^ prg(k1, self.batches, n // 8) ^ r
        self.batches += 1
        return u.tobytes(), transpose_bits(t)
