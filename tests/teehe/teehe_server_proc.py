"""A tee+he server for the tiny test BERT (and its refresh enclave) in its own process.

Used as a script by `running_server`: the server forks a worker per session and launches the
enclave (measured, isolated, as the `privinfer-enclave` user), so it runs apart from pytest.
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

from privinfer.net.lifetime import spawn

TINY_RANGES = {"score_abs": (4.0,)}


@dataclass
class ServerProc:
    folder: Path
    port: int
    log: Path
    proc: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def endpoint(self):
        from privinfer.net.cluster import load_cluster
        from privinfer.teehe.client import endpoint_from

        return endpoint_from(
            load_cluster(self.folder / "certs"),
            "127.0.0.1",
            self.port,
            self.folder / "root_cert.pem",
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(folder: Path, model: str = "tiny-bert") -> Iterator[ServerProc]:
    ready, log, port = folder / "ready", folder / "server.log", _free_port()
    cmd = [sys.executable, __file__, str(folder), str(ready), str(port), model]
    with open(log, "wb") as err:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield ServerProc(folder, port, log, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


LLAMA_PROMPT = [256, 87, 104]


class TinyLlama:
    """The tiny random LLaMA of tests/he/test_tiny_llama.py, as a served model."""

    def __init__(self) -> None:
        from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights

        self.cfg = tiny_llama_config()
        self.weights = tiny_llama_weights(self.cfg, seed=3)
        self.name = "tiny-llama"

    def build(self, ops: Any) -> Any:
        from privinfer.models.llama import Llama

        return Llama(self.cfg, self.weights, ops)

    def ranges(self) -> Any:
        from privinfer.he.calibrate import calibrate_decoder
        from privinfer.he.ranges import HeRanges

        rec = calibrate_decoder(self, [LLAMA_PROMPT, [256, 1, 2]], new_tokens=2)
        return HeRanges.from_calibration(rec)


def tiny_model(name: str) -> Any:
    if name == "tiny-llama":
        return TinyLlama()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "he"))
    from test_ops import _tiny_bert

    from privinfer.api import EmbeddingModel

    cfg, weights = _tiny_bert()
    return EmbeddingModel("tiny-bert", cfg, weights, None, Path("."))


def main(argv: list[str]) -> None:
    from privinfer.he.ranges import HeRanges
    from privinfer.teehe.launch import serve_with_enclave

    folder, ready, port, name = argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    model = tiny_model(name)
    serve_with_enclave(
        model,
        Path(folder),
        int(port),
        ranges=model.ranges() if name == "tiny-llama" else HeRanges(**TINY_RANGES),
        ready=lambda p: Path(ready).write_text(str(p)),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
