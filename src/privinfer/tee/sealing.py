"""Sealing: chunked AES-256-GCM blobs under platform-derived keys, bound to identity, SVN, purpose.

Security assumption: the sealing secret and counters of the platform (platform.py) are out of
the host's reach; on the software platform that holds only against processes that cannot read
the platform directory, not against root. Sealing does not hide the blob's size or purpose.

Blob layout (big-endian):
    header  magic b"PISB" | version u16=1 | key_policy u8 | reserved u8=0 | product_id u16 |
            svn u16 | counter u64 | chunk_size u32 | plaintext_size u64 | blob_id 16 bytes |
            purpose (u32 length || UTF-8, at most 255 bytes)
    chunks  final u8 | ciphertext_len u32 | AES-256-GCM ciphertext+tag, for chunk 0, 1, ...

Policy: MEASUREMENT by default; SIGNER only with a `SignerProof` (the signer's signature over the
identity), since a signer id alone is public and any enclave could claim it.
Keys: k = platform.derive_sealing_key(identity, key_policy, svn, "privinfer-seal-v1:" + purpose);
blob key = HKDF-SHA256(k, salt=blob_id, info="privinfer-seal-blob-v1"). Chunk i uses nonce
4 zero bytes || u64 i and AAD = header || u64 i || final u8, so reordered, dropped, spliced or
truncated chunks (no final chunk) fail. Rollback: each seal increments the platform counter for
(policy, identity, purpose) and stores the new value; unseal accepts only a blob whose counter
equals the platform's, so an older blob of the same purpose is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privinfer.errors import SecurityError
from privinfer.tee.measurement import EnclaveIdentity, SignerProof, lp
from privinfer.tee.platform import KeyPolicy, Platform, PlatformError

MAGIC = b"PISB"
VERSION = 1
_FIXED = struct.Struct(">4sHBBHHQIQ16s")
_CHUNK_HDR = struct.Struct(">BI")
TAG_LEN = 16
DEFAULT_CHUNK = 1 << 20
MAX_CHUNK = 64 << 20


class SealingError(SecurityError):
    """A blob could not be sealed or unsealed (wrong identity, purpose, rollback, tampering)."""


def counter_name(identity: EnclaveIdentity, key_policy: KeyPolicy, purpose: str) -> str:
    """The platform counter that orders blobs of this identity (or signer) and purpose."""
    bound = identity.measurement if key_policy is KeyPolicy.MEASUREMENT else identity.signer
    h = hashlib.sha256(
        lp(b"privinfer-seal-counter-v1")
        + struct.pack(">BH", key_policy, identity.product_id)
        + lp(bound)
        + lp(purpose.encode())
    )
    return "seal:" + h.hexdigest()[:32]


def _blob_key(
    platform: Platform,
    identity: EnclaveIdentity,
    key_policy: KeyPolicy,
    svn: int,
    purpose: str,
    blob_id: bytes,
    proof: SignerProof | None,
) -> AESGCM:
    if svn > identity.svn:
        raise SealingError("blob was sealed by a newer security version")
    label = b"privinfer-seal-v1:" + purpose.encode()
    try:
        k = platform.derive_sealing_key(
            identity, key_policy=key_policy, svn=svn, label=label, signer_proof=proof
        )
    except PlatformError as exc:
        raise SealingError(str(exc)) from None
    return AESGCM(HKDF(hashes.SHA256(), 32, blob_id, b"privinfer-seal-blob-v1").derive(k))


def _nonce(i: int) -> bytes:
    return b"\0\0\0\0" + struct.pack(">Q", i)


def _seal(
    platform: Platform,
    identity: EnclaveIdentity,
    src: BinaryIO,
    size: int,
    write: Callable[[bytes], object],
    purpose: str,
    key_policy: KeyPolicy,
    chunk_size: int,
    proof: SignerProof | None = None,
) -> int:
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise ValueError("chunk_size out of range")
    p = purpose.encode()
    if not 1 <= len(p) <= 255:
        raise ValueError("purpose must be 1..255 bytes of UTF-8")
    key_policy = KeyPolicy(key_policy)
    name = counter_name(identity, key_policy, purpose)
    counter = platform.counter_read(name) + 1
    blob_id = secrets.token_bytes(16)
    header = _FIXED.pack(
        MAGIC,
        VERSION,
        key_policy,
        0,
        identity.product_id,
        identity.svn,
        counter,
        chunk_size,
        size,
        blob_id,
    ) + lp(p)
    aead = _blob_key(platform, identity, key_policy, identity.svn, purpose, blob_id, proof)
    write(header)
    n = max(1, -(-size // chunk_size))
    for i in range(n):
        want = min(chunk_size, size - i * chunk_size)
        chunk = src.read(want)
        if len(chunk) != want:
            raise SealingError("source changed size while sealing")
        final = int(i == n - 1)
        ct = aead.encrypt(_nonce(i), chunk, header + struct.pack(">QB", i, final))
        write(_CHUNK_HDR.pack(final, len(ct)) + ct)
    if src.read(1):
        raise SealingError("source changed size while sealing")
    if platform.counter_increment(name) != counter:
        raise SealingError("concurrent sealing of the same purpose")
    return counter


def _read_exact(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise SealingError("sealed blob is truncated")
    return data


def _unseal(
    platform: Platform,
    identity: EnclaveIdentity,
    src: BinaryIO,
    purpose: str,
    max_size: int | None,
    start: Callable[[int], object],
    emit: Callable[[int, bytes], object],
    proof: SignerProof | None = None,
) -> None:
    fixed = _read_exact(src, _FIXED.size)
    magic, ver, pol, rsv, pid, svn, counter, chunk_size, size, blob_id = _FIXED.unpack(fixed)
    if magic != MAGIC or ver != VERSION or rsv != 0 or pol not in (1, 2):
        raise SealingError("not a sealed blob of a supported version")
    (plen,) = struct.unpack(">I", _read_exact(src, 4))
    if plen > 255:
        raise SealingError("sealed blob header is malformed")
    p = _read_exact(src, plen)
    header = fixed + lp(p)
    if p != purpose.encode():
        raise SealingError("sealed blob has a different purpose")
    if pid != identity.product_id:
        raise SealingError("sealed blob belongs to another product")
    if not 1 <= chunk_size <= MAX_CHUNK or (max_size is not None and size > max_size):
        raise SealingError("sealed blob header is malformed")
    key_policy = KeyPolicy(pol)
    if svn > identity.svn:
        raise SealingError("blob was sealed by a newer security version")
    aead = _blob_key(platform, identity, key_policy, svn, purpose, blob_id, proof)
    current = platform.counter_read(counter_name(identity, key_policy, purpose))
    if counter < current:
        raise SealingError("rollback: an older sealed blob was presented")
    if counter > current:
        raise SealingError("sealed blob is newer than the platform counter")
    start(size)
    n = max(1, -(-size // chunk_size))
    for i in range(n):
        final, ct_len = _CHUNK_HDR.unpack(_read_exact(src, _CHUNK_HDR.size))
        want = min(chunk_size, size - i * chunk_size)
        if final != int(i == n - 1) or ct_len != want + TAG_LEN:
            raise SealingError("sealed blob chunk framing is wrong")
        ct = _read_exact(src, ct_len)
        try:
            pt = aead.decrypt(_nonce(i), ct, header + struct.pack(">QB", i, final))
        except InvalidTag:
            raise SealingError("sealed blob failed authentication") from None
        emit(i * chunk_size, pt)
    if src.read(1):
        raise SealingError("sealed blob has trailing bytes")


def seal_bytes(
    platform: Platform,
    identity: EnclaveIdentity,
    data: bytes,
    *,
    purpose: str,
    key_policy: KeyPolicy = KeyPolicy.MEASUREMENT,
    chunk_size: int = DEFAULT_CHUNK,
    signer_proof: SignerProof | None = None,
) -> bytes:
    """Seal `data` for `identity` and `purpose`; increments the purpose's platform counter."""
    out = io.BytesIO()
    _seal(
        platform,
        identity,
        io.BytesIO(data),
        len(data),
        out.write,
        purpose,
        key_policy,
        chunk_size,
        signer_proof,
    )
    return out.getvalue()


def unseal_bytes(
    platform: Platform,
    identity: EnclaveIdentity,
    blob: bytes,
    *,
    purpose: str,
    signer_proof: SignerProof | None = None,
) -> bytearray:
    """Open a sealed blob held in memory; returns the plaintext or raises SealingError. A SIGNER
    blob needs `signer_proof` (the signer's signature over `identity`)."""
    return _unseal_to_memory(platform, identity, io.BytesIO(blob), purpose, len(blob), signer_proof)


def _unseal_to_memory(
    platform: Platform,
    identity: EnclaveIdentity,
    src: BinaryIO,
    purpose: str,
    max_size: int,
    proof: SignerProof | None = None,
) -> bytearray:
    holder = [bytearray()]

    def start(n: int) -> None:
        holder[0] = bytearray(n)

    def emit(off: int, pt: bytes) -> None:
        holder[0][off : off + len(pt)] = pt

    _unseal(platform, identity, src, purpose, max_size, start, emit, proof)
    return holder[0]


def seal_file(
    platform: Platform,
    identity: EnclaveIdentity,
    src: Path | str,
    dst: Path | str,
    *,
    purpose: str,
    key_policy: KeyPolicy = KeyPolicy.MEASUREMENT,
    chunk_size: int = DEFAULT_CHUNK,
    signer_proof: SignerProof | None = None,
) -> int:
    """Seal file `src` into `dst` (streamed; written to a temp file, then renamed). Returns counter."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with open(src, "rb") as f, open(tmp, "wb") as out:
            size = os.fstat(f.fileno()).st_size
            counter = _seal(
                platform,
                identity,
                f,
                size,
                out.write,
                purpose,
                key_policy,
                chunk_size,
                signer_proof,
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return counter


def unseal_file_to_memory(
    platform: Platform, identity: EnclaveIdentity, src: Path | str, *, purpose: str
) -> bytearray:
    """Open a sealed file into one in-memory buffer (the model), streaming the ciphertext."""
    with open(src, "rb") as f:
        return _unseal_to_memory(platform, identity, f, purpose, os.fstat(f.fileno()).st_size)


def unseal_file(
    platform: Platform, identity: EnclaveIdentity, src: Path | str, dst: Path | str, *, purpose: str
) -> None:
    """Open sealed file `src` into `dst` (0600); `dst` appears only if the whole blob verified."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
            limit = os.fstat(f.fileno()).st_size
            _unseal(
                platform, identity, f, purpose, limit, lambda n: None, lambda o, pt: out.write(pt)
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
