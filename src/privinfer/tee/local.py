"""Start `privinfer tee serve` as a child process on localhost (demo, benchmark, tests, local mode).

Security assumption: this is a convenience launcher for one machine: it creates a software
platform if none exists (keys in a 0700 directory) and exports the root the clients then pin.
The server it starts is the ordinary untrusted host + enclave pair; clients still attest it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

from privinfer.errors import PrivinferError
from privinfer.net.lifetime import spawn
from privinfer.tee.protocol import default_data_dir, default_platform_dir, default_root_cert


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_platform(platform_dir: Path, root: Path) -> None:
    """Create the software platform if absent; make sure the clients' root copy exists."""
    from privinfer.tee.platform import init_platform

    if not platform_dir.exists():
        platform_dir.parent.mkdir(parents=True, exist_ok=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        if root.exists():
            root.unlink()
        init_platform(platform_dir, export_root_to=root)
    elif not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_bytes((platform_dir / "root_cert.pem").read_bytes())


class LocalServer:
    """`privinfer tee serve` in a child process; `url` and `root` once `start()` returned."""

    def __init__(
        self,
        *,
        model: str = "smollm2-135m",
        platform_dir: Path | str | None = None,
        data_dir: Path | str | None = None,
        root: Path | str | None = None,
        threads: int | None = None,
        port: int | None = None,
        session_ttl: float | None = None,
        max_sessions: int | None = None,
        max_sessions_per_client: int | None = None,
        config: dict[str, Any] | None = None,
        debug_enclave: bool = False,
        trace: Path | str | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
        insecure_same_user: bool | None = None,
    ) -> None:
        self.model = model
        self.platform_dir = Path(platform_dir) if platform_dir else default_platform_dir()
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.root = Path(root) if root else default_root_cert()
        self.threads, self.session_ttl, self.debug_enclave = threads, session_ttl, debug_enclave
        self.max_sessions, self.max_sessions_per_client = max_sessions, max_sessions_per_client
        self.config = config
        self.trace, self.stdout, self.stderr = trace, stdout, stderr
        # Only root can start the enclave as its own user; a non-root launcher on one machine
        # (the demo, local tee mode) serves its own prompts, so it runs both as itself.
        self.insecure_same_user = (
            os.geteuid() != 0 if insecure_same_user is None else insecure_same_user
        )
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "privinfer.cli", "tee", "serve", "--model", self.model]
        cmd += ["--platform-dir", str(self.platform_dir), "--data", str(self.data_dir)]
        if self.insecure_same_user:
            cmd.append("--insecure-same-user")
        cmd += ["--port", str(self.port)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        if self.session_ttl is not None:
            cmd += ["--session-ttl", str(self.session_ttl)]
        if self.max_sessions is not None:
            cmd += ["--max-sessions", str(self.max_sessions)]
        if self.max_sessions_per_client is not None:
            cmd += ["--max-sessions-per-client", str(self.max_sessions_per_client)]
        if self.config:
            cmd += ["--config", json.dumps(self.config)]
        if self.debug_enclave:
            cmd.append("--debug-enclave")
        if self.trace:
            cmd += ["--trace", str(self.trace)]
        return cmd

    def start(self, timeout: float = 180.0) -> LocalServer:
        ensure_platform(self.platform_dir, self.root)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # SIGTERM when this process dies, however it dies: the host then stops its enclave and
        # removes its socket folder (its enclave gets SIGKILL should the host itself be killed)
        self.proc = spawn(
            self.command(),
            death_signal=signal.SIGTERM,
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=self.stderr,
            env=env,
        )
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise PrivinferError(f"privinfer tee serve exited with code {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise PrivinferError("privinfer tee serve did not become ready in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
