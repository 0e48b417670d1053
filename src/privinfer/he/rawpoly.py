"""Raw RNS polynomial access to SEAL objects (hazmat: used only by the refresh protocol and the
delivery flood).

Security assumption: builds and reads ciphertext and plaintext residues through SEAL's serial
format (header, then the object's members, zstd- or zlib-compressed or not); holds no keys;
callers (`CkksContext.add_rns_poly` / `decrypt_rns`) decide what is masked.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from privinfer.errors import SecurityError
from privinfer.he.ckks import Ciphertext, CkksContext, Plaintext
from privinfer.he.serial import load_bytes, save_bytes

_HEADER = struct.Struct("<HBBBBHQ")  # SEAL header: magic, size, version, compr mode, size
_MAGIC = 0xA15E


def _header(ctx: CkksContext, body: bytes) -> bytes:
    v = ctx._seal_version
    return _HEADER.pack(_MAGIC, 16, v[0], v[1], 0, 0, 16 + len(body)) + body


def _dyn_array(ctx: CkksContext, values: np.ndarray) -> bytes:
    values = np.ascontiguousarray(values, np.uint64)
    return _header(ctx, struct.pack("<Q", values.size) + values.tobytes())


def _members(data: bytes) -> bytes:
    """The serialised members of a SEAL object saved by `serial.save_bytes` (decompressed)."""
    magic, _, _, _, mode, _, size = _HEADER.unpack_from(data)
    if magic != _MAGIC or size != len(data):
        raise SecurityError("Not a SEAL object.")
    body = data[_HEADER.size :]
    if mode == 0:
        return body
    if mode == 1:
        return zlib.decompress(body)
    if mode == 2 and _zstd is not None:
        return _zstd.ZstdDecompressor().decompress(body, max_output_size=1 << 31)
    raise _NoParse


class _NoParse(Exception):
    """SEAL compressed the object with zstd and the `zstandard` module is missing."""


try:  # SEAL saves with zstd by default; without the module, residues are read one by one
    import zstandard as _zstd
except ImportError:  # pragma: no cover - the venv has it
    _zstd = None


def raw_ciphertext(
    ctx: CkksContext, polys: np.ndarray, level: int, ntt: bool, scale: float
) -> Ciphertext:
    """Build a ciphertext from RNS residues `polys` of shape (size, k, N), uint64."""
    size, k, n = polys.shape
    meta = struct.pack("<4Q", *ctx._parms_ids[level]) + bytes([1 if ntt else 0])
    meta += struct.pack("<QQQdQ", size, n, k, scale, 1)
    return load_bytes(Ciphertext(), ctx.seal, _header(ctx, meta + _dyn_array(ctx, polys)))


def raw_plaintext(ctx: CkksContext, res: np.ndarray, level: int, scale: float) -> Plaintext:
    """A CKKS plaintext (NTT form, at `level`) from its residues (k, N), uint64."""
    meta = struct.pack("<4QQd", *ctx._parms_ids[level], res.size, scale)
    return load_bytes(Plaintext(), ctx.seal, _header(ctx, meta + _dyn_array(ctx, res)))


def raw_residues(ct: Ciphertext, polys: int | None = None) -> np.ndarray:
    """RNS residues of the first `polys` polynomials (all by default), (polys, k, N)."""
    try:
        body = _members(save_bytes(ct))
    except _NoParse:  # pragma: no cover - slow path without zstandard
        arr, n, k = ct.dyn_array(), ct.poly_modulus_degree(), ct.coeff_modulus_size()
        polys = ct.size() if polys is None else polys
        return np.array([arr.at(i) for i in range(polys * k * n)], np.uint64).reshape(polys, k, n)
    size, n, k = struct.unpack_from("<QQQ", body, 33)
    # members: parms_id (32), NTT flag (1), size, N, k, scale, correction (40), array header
    # (16) and count (8), then the data
    arr = np.frombuffer(body, np.uint64, count=size * k * n, offset=33 + 40 + 24)
    polys = size if polys is None else polys
    return arr.reshape(size, k, n)[:polys].copy()


def plain_residues(pt: Plaintext, k: int, n: int) -> np.ndarray:
    """Residues (k, N) of an NTT-form CKKS plaintext."""
    try:
        body = _members(save_bytes(pt))
    except _NoParse:  # pragma: no cover - slow path without zstandard
        return np.array([pt.data(i) for i in range(k * n)], np.uint64).reshape(k, n)
    # members: parms_id (32), coefficient count, scale (16), array header (16) and count (8)
    return np.frombuffer(body, np.uint64, count=k * n, offset=32 + 16 + 24).reshape(k, n).copy()
