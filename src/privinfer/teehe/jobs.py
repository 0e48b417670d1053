"""Finished tee+he jobs, stored by job id until fetched.

Security assumption: a result is the output ciphertexts under the client's key (and the
delivery metadata: shapes and counts), an error is one fixed-form sentence; neither holds a
key or a plaintext. The job id (128 random bits, hex) is the capability to fetch; a fetched
job is deleted. Unfetched jobs stay until the server's state folder is removed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from privinfer.errors import InputError
from privinfer.he.session import pack_meta, unpack_meta

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
POLL_S = 0.2


class Jobs:
    """Finished jobs by id: `<id>.res` (encrypted result) or `<id>.err` (one sentence)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _put(self, job: str, ext: str, data: bytes) -> None:
        tmp = self.folder / f".{job}.{ext}.tmp"
        tmp.write_bytes(data)
        tmp.rename(self.folder / f"{job}.{ext}")

    def done(self, job: str, meta: dict[str, Any], payload: bytes) -> None:
        self._put(job, "res", pack_meta(meta, payload))

    def failed(self, job: str, message: str) -> None:
        self._put(job, "err", message.encode())

    def take(self, job: str, wait_s: float) -> tuple[str, dict[str, Any], bytes]:
        """Wait up to `wait_s` for the job; returns ("RSLT", meta, payload) or ("ERR", ...)."""
        if not JOB_ID.match(job):
            raise InputError("Malformed job id.")
        deadline = time.monotonic() + wait_s
        while True:
            for ext, kind in (("res", "RSLT"), ("err", "ERR")):
                path = self.folder / f"{job}.{ext}"
                if path.exists():
                    data = path.read_bytes()
                    path.unlink(missing_ok=True)
                    if kind == "ERR":
                        return kind, {"message": data.decode()}, b""
                    meta, payload = unpack_meta(data)
                    return kind, meta, payload
            if time.monotonic() > deadline:
                raise InputError("No result for that job (unknown, already fetched, or not done).")
            time.sleep(POLL_S)
