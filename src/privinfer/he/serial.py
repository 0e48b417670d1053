"""Byte (de)serialisation of SEAL objects through anonymous memory files (no filesystem).

Security assumption: SEAL's Python binding saves and loads only by path; an anonymous memfd
keeps masks, masked polynomials and ciphertexts off every filesystem. The secret key is never
passed here. A load that SEAL rejects (other parameters, corrupt data) is a SecurityError.
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
