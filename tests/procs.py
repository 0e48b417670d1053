"""Process helpers for the lifetime tests: is a pid still running, and wait for pids to go."""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (killed, not yet reaped by init) counts as dead."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("\n")[1]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "Z" not in state.split(":", 1)[1]


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]
