"""Compact replies: the coefficients of a ciphertext at q'' = p1 p2 (two RNS residues each, 112
bits) travel as their top bits only, floor(c / 2^DROP) in 9 bytes instead of 15 (Cheetah's
truncation of the low-order bits, which lie under the noise).

Soundness: the client uses c' = floor(c / 2^d) 2^d + 2^(d-1), so |c' - c| <= 2^(d-1) per
coefficient of c0 and c1, and the decryption noise grows by at most 2^(d-1) (1 + ||s||_1)
<= 2^(d-1) (N + 1) for a ternary secret: with d = 44 that is 2^56.0, which with the flooded
noise (2^54.7 at q'') stays under q''/(2t) = 2^58.4 (`bfv.py` checks it at import). Security:
rounding is a public function of the sanitised ciphertext (post-processing). No secrets here:
numpy arithmetic on uint64 words (a 128-bit product by 32-bit halves, products mod p by 4-bit
digits so nothing exceeds 2^63).
"""

from __future__ import annotations

import numpy as np

DROP_BITS = 44
WIDTH = 9  # bytes per coefficient: the top value is < 2^68


def _mulmod_const(a: np.ndarray, c: int, p: int) -> np.ndarray:
    """a * c mod p for uint64 a < 2^60 and p < 2^59: sum of 4-bit digits of a times
    (c 16^k mod p), reduced after each step (each partial < 2^63)."""
    acc = np.zeros(a.shape, np.uint64)
    pp = np.uint64(p)
    for k in range(15):
        acc += ((a >> np.uint64(4 * k)) & np.uint64(15)) * np.uint64(c * pow(16, k, p) % p)
        acc %= pp
    return acc


def compress(r1: np.ndarray, r2: np.ndarray, p1: int, p2: int) -> bytes:
    """Residues (mod p1, mod p2) of coefficients c < p1 p2 -> floor(c / 2^DROP) as WIDTH bytes
    each (little endian)."""
    r1 = np.asarray(r1, np.uint64)
    r2 = np.asarray(r2, np.uint64)
    k = _mulmod_const((r2 + np.uint64(p2) - r1) % np.uint64(p2), pow(p1, -1, p2), p2)
    # c = r1 + p1 k (< 2^112) as two words: p1 k by 32-bit halves
    m32 = np.uint64(0xFFFFFFFF)
    kl, kh = k & m32, k >> np.uint64(32)
    pl, ph = np.uint64(p1 & 0xFFFFFFFF), np.uint64(p1 >> 32)
    low = pl * kl
    mid = ph * kl + pl * kh  # < 2^58
    lo = low + (mid << np.uint64(32))
    hi = ph * kh + (mid >> np.uint64(32)) + (lo < low).astype(np.uint64)
    lo2 = lo + r1
    hi += (lo2 < lo).astype(np.uint64)
    d = np.uint64(DROP_BITS)
    value = (hi << np.uint64(64 - DROP_BITS)) | (lo2 >> d)
    top = (hi >> d).astype(np.uint8)
    out = np.empty((r1.size, WIDTH), np.uint8)
    out[:, :8] = value.view(np.uint8).reshape(-1, 8)
    out[:, 8] = top
    return out.tobytes()


def expand(data: bytes, p1: int, p2: int) -> tuple[np.ndarray, np.ndarray] | None:
    """WIDTH-byte values v -> residues of v 2^DROP + 2^(DROP-1) mod p1 and mod p2; None when a
    value is out of range (>= ceil(p1 p2 / 2^DROP)): the caller raises."""
    raw = np.frombuffer(data, np.uint8).reshape(-1, WIDTH)
    low = np.ascontiguousarray(raw[:, :8]).view(np.uint64).reshape(-1)
    top = raw[:, 8].astype(np.uint64)
    limit = -(-(p1 * p2) >> DROP_BITS)
    too_big = (top > np.uint64(limit >> 64)) | (
        (top == np.uint64(limit >> 64)) & (low >= np.uint64(limit & ((1 << 64) - 1)))
    )
    if too_big.any():
        return None
    out = []
    for p in (p1, p2):
        pp = np.uint64(p)
        u = (low % pp + top * np.uint64((1 << 64) % p)) % pp
        u = _mulmod_const(u, (1 << DROP_BITS) % p, p)
        out.append((u + np.uint64((1 << (DROP_BITS - 1)) % p)) % pp)
    return out[0], out[1]
