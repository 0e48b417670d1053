"""Wire framing for CKKS ciphertexts: session-bound messages that a server or client can check.

Security assumption: framing only (no confidentiality or integrity beyond the transport's);
the session id binds a message to one key set, so a ciphertext from another session or from
other parameters is refused with a clear error before any arithmetic touches it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from privinfer.errors import InputError, SecurityError
from privinfer.he.ckks import Ciphertext, CkksContext

MAGIC = b"PIHE\x01"


def pack_ciphertexts(ctx: CkksContext, cts: Sequence[Ciphertext]) -> bytes:
    """MAGIC | session id (16) | count (u32) | (length u64 | SEAL bytes)*."""
    return pack_blobs(ctx, [ctx.ciphertext_to_bytes(ct) for ct in cts])


def pack_blobs(ctx: CkksContext, blobs: Sequence[bytes]) -> bytes:
    """Like `pack_ciphertexts` for ciphertexts already serialised (e.g. seeded ones, whose
    uniform half SEAL regenerates from a seed when `unpack_ciphertexts` loads them)."""
    parts = [MAGIC, ctx.session_id, struct.pack("<I", len(blobs))]
    for blob in blobs:
        parts += [struct.pack("<Q", len(blob)), blob]
    return b"".join(parts)


def unpack_ciphertexts(ctx: CkksContext, data: bytes) -> list[Ciphertext]:
    """Inverse of `pack_ciphertexts`; refuses another session's or malformed messages."""
    head = len(MAGIC) + 16 + 4
    if len(data) < head or data[: len(MAGIC)] != MAGIC:
        raise InputError("Not a privinfer HE ciphertext message.")
    if data[len(MAGIC) : len(MAGIC) + 16] != ctx.session_id:
        raise SecurityError("Ciphertext message belongs to another HE session; refused.")
    (count,) = struct.unpack_from("<I", data, len(MAGIC) + 16)
    pos, out = head, []
    for _ in range(count):
        if pos + 8 > len(data):
            raise InputError("Truncated HE ciphertext message.")
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        if pos + n > len(data):
            raise InputError("Truncated HE ciphertext message.")
        out.append(ctx.ciphertext_from_bytes(data[pos : pos + n]))
        pos += n
    if pos != len(data):
        raise InputError("Trailing bytes after HE ciphertext message.")
    return out
