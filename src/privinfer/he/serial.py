"""Byte (de)serialisation of SEAL objects through anonymous memory files (no filesystem).

Security assumption: SEAL's Python binding saves and loads only by path; an anonymous memfd
keeps masks, masked polynomials and ciphertexts off every filesystem. The secret key passes
only through `save_secret` (a memfd, read into a bytearray the caller zeroes), for its release
to an attested refresh enclave. A load that SEAL rejects (other parameters, corrupt data) is a SecurityError.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from privinfer.errors import SecurityError


@contextmanager
def _scratch_path() -> Iterator[str]:
    """A path for SEAL's file-only save/load: an anonymous memory file (memfd) on Linux, so
    masks and masked polynomials never reach a filesystem; a private temp dir elsewhere."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("privinfer-he", os.MFD_CLOEXEC)
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
    else:  # pragma: no cover - non-Linux
        with tempfile.TemporaryDirectory(prefix="privinfer-he-") as d:
            yield os.path.join(d, "obj")


def save_bytes(obj) -> bytes:
    with _scratch_path() as path:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()


def load_bytes(obj, context, data: bytes):
    with _scratch_path() as path:
        with open(path, "wb") as f:
            f.write(data)
        try:
            obj.load(context, path)
        except (ValueError, RuntimeError) as exc:
            raise SecurityError(
                "Serialized CKKS object does not belong to this context (parameters differ or data is corrupt)."
            ) from exc
    return obj


def save_secret(obj) -> bytearray:
    """Like save_bytes, into a bytearray (which, unlike bytes, can be zeroed after use)."""
    with _scratch_path() as path:
        obj.save(path)
        size = os.path.getsize(path)
        out = bytearray(size)
        with open(path, "rb", buffering=0) as f:
            f.readinto(out)
        with open(path, "r+b", buffering=0) as f:  # the memfd's pages: zero before closing
            f.write(bytes(size))
        return out


def erase_buffer(buf: bytearray) -> None:
    """Overwrite a key buffer with zeros in place."""
    buf[:] = bytes(len(buf))
