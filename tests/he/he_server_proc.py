"""An HE server for the tiny test BERT in its own process (as `privinfer he serve` runs).

The server forks a worker per session, so it runs as a separate, single-threaded process here,
never inside the multi-threaded pytest process. Used as a script by `running_server`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privinfer.he.transport import ensure_identities
from privinfer.net.lifetime import spawn


@dataclass
class ServerProc:
    cluster: Any
    port: int
    log: Path
    proc: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(folder: Path, max_sessions: int = 2, sessions: int = 0) -> Iterator[ServerProc]:
    """Start the tiny-BERT server in a subprocess; stop it (SIGTERM) on exit."""
    cluster = ensure_identities(folder / "certs", 1)
    ready, log = folder / "ready", folder / "server.log"
    cmd = [sys.executable, __file__, str(folder / "certs"), str(ready), str(max_sessions)]
    with open(log, "wb") as err:
        proc = spawn(cmd + [str(sessions)], stdin=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300  # imports and keys: slow on a loaded machine
        while not ready.exists() or not ready.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield ServerProc(cluster, int(ready.read_text()), log, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_ops import _tiny_bert

    from privinfer.api import EmbeddingModel
    from privinfer.he.ranges import HeRanges
    from privinfer.he.server import serve
    from privinfer.net.cluster import load_cluster

    certs, ready, max_sessions, sessions = argv
    cfg, weights = _tiny_bert()
    model = EmbeddingModel("tiny-bert", cfg, weights, None, Path("."))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(
        model,
        load_cluster(Path(certs)),
        "127.0.0.1",
        0,
        sessions=int(sessions),
        ready=lambda port: Path(ready).write_text(str(port)),
        ranges=HeRanges(score_abs=(4.0,)),
        max_sessions=int(max_sessions),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
