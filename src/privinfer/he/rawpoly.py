"""Raw RNS polynomial access to SEAL ciphertexts (hazmat: used only by the refresh protocol).

Security assumption: builds and reads ciphertext residues through SEAL's serial format; holds no
keys; callers (`CkksContext.add_integer_poly` / `decrypt_integer_poly`) decide what is masked.
"""

from __future__ import annotations

import struct

import numpy as np

from privinfer.he.ckks import Ciphertext, CkksContext
from privinfer.he.serial import load_bytes


def raw_ciphertext(
    ctx: CkksContext, polys: np.ndarray, level: int, ntt: bool, scale: float
) -> Ciphertext:
    """Build a ciphertext from RNS residues `polys` of shape (size, k, N), uint64."""
    size, k, n = polys.shape

    def header(body: bytes) -> bytes:
        v = ctx._seal_version
        return struct.pack("<HBBBBHQ", 0xA15E, 16, v[0], v[1], 0, 0, 16 + len(body)) + body

    arr = header(struct.pack("<Q", polys.size) + np.ascontiguousarray(polys, np.uint64).tobytes())
    meta = struct.pack("<4Q", *ctx._parms_ids[level]) + bytes([1 if ntt else 0])
    meta += struct.pack("<QQQdQ", size, n, k, scale, 1)
    return load_bytes(Ciphertext(), ctx.seal, header(meta + arr))


def raw_residues(ct: Ciphertext, polys: int | None = None) -> np.ndarray:
    """RNS residues of the first `polys` polynomials (all by default), (polys, k, N)."""
    arr = ct.dyn_array()
    n, k = ct.poly_modulus_degree(), ct.coeff_modulus_size()
    polys = ct.size() if polys is None else polys
    return np.array([arr.at(i) for i in range(polys * k * n)], np.uint64).reshape(polys, k, n)
