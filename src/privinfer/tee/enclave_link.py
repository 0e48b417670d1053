"""The host's side of the enclave process: start it (isolated and measured, tee/launch.py, as its
own user, dying with the host, net/lifetime.py), talk to it over its Unix socket, stop it.

Security assumption: as for tee/host.py, nothing here is trusted; the link carries only nonces,
quotes, public keys and AES-GCM records. A dead enclave is answered at once: the process is
polled per request, and a connection closed without an answer waits briefly for the process to
be reaped before saying which it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from privinfer.errors import InputError, PrivinferError
from privinfer.tee.protocol import (
    OP_HEALTH,
    ST_ERR,
    ST_OK,
    ProtocolError,
    arecv_frame,
    frame,
    recv_frame,
)


class ApiError(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(code)
        self.code, self.message = code, message


class EnclaveLink:
    """The host's handle on the enclave: its socket and (when we launched it) its process."""

    def __init__(self, socket_path: str, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.socket_path, self.proc = socket_path, proc
        self.trace: BinaryIO | None = None

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    async def _exited(self, grace_s: float) -> bool:
        """Whether the enclave process is gone, waiting up to `grace_s`: a killed enclave with
        many threads and a large heap closes its sockets before the kernel lets it be reaped."""
        if self.proc is None:
            return False
        try:
            await asyncio.to_thread(self.proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def record(self, direction: bytes, data: bytes) -> None:
        """Append what the host forwarded to the trace file (tests: prove it is ciphertext)."""
        if self.trace is not None:
            self.trace.write(direction + len(data).to_bytes(4, "big") + data)
            self.trace.flush()

    async def open(self, op: int, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not self.alive():
            raise ApiError("enclave_unavailable", "the enclave process is not running")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path, limit=1 << 22), 2.0
            )
        except (OSError, TimeoutError):
            raise ApiError("enclave_unavailable", "cannot reach the enclave") from None
        msg = frame(op, body)
        self.record(b">", msg)
        writer.write(msg)
        return reader, writer

    async def first(self, reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
        try:
            kind, body = await asyncio.wait_for(arecv_frame(reader), timeout)
        except (ProtocolError, TimeoutError):
            if not await self._exited(1.0):
                raise ApiError("enclave_unavailable", "the enclave did not answer") from None
            raise ApiError("enclave_unavailable", "the enclave process is not running") from None
        self.record(b"<", bytes([kind]) + body)
        if kind == ST_ERR:
            try:
                err = json.loads(body)
                raise ApiError(str(err["code"]), str(err.get("message", "")))
            except (ValueError, KeyError, TypeError):
                raise ApiError("internal") from None
        return kind, body

    async def call(self, op: int, body: bytes, timeout: float = 10.0) -> bytes:
        reader, writer = await self.open(op, body)
        try:
            kind, out = await self.first(reader, timeout)
            if kind != ST_OK:
                raise ApiError("internal")
            return out
        finally:
            writer.close()


def _wait_ready(link: EnclaveLink, timeout: float) -> dict[str, Any]:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if not link.alive():
            raise PrivinferError("the enclave process exited during start-up (see its log above)")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5.0)
                s.connect(link.socket_path)
                s.sendall(frame(OP_HEALTH))
                kind, body = recv_frame(s)
                if kind == ST_OK:
                    return json.loads(body)
        except (OSError, ProtocolError):
            pass
        time.sleep(0.1)
    raise PrivinferError("the enclave did not become ready in time")


def start_enclave(
    model_source: Path | None,
    platform_dir: Path,
    data_dir: Path,
    *,
    threads: int | None = None,
    config: dict[str, Any] | None = None,
    debug_enclave: bool = False,
    run_as: tuple[int, int] | None = None,
    quotes: str = "software",
    ready_timeout: float = 180.0,
) -> tuple[EnclaveLink, dict[str, Any], str]:
    """Launch the enclave (isolated and measured, tee/launch.py; dying with this process,
    net/lifetime.py) on a listening socket made here, and wait until it answers. With `run_as`
    (uid, gid) the enclave drops to that user before serving. Returns link, health, socket dir."""
    from privinfer.net.lifetime import spawn
    from privinfer.tee import launch
    from privinfer.tee.measurement import package_root

    sock_dir = tempfile.mkdtemp(prefix="privinfer-enclave-")
    path = os.path.join(sock_dir, "enclave.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(128)
        args = ["--platform", str(platform_dir), "--data", str(data_dir)]
        args += ["--socket-fd", str(listener.fileno()), "--quotes", quotes]
        if model_source is not None:
            args += ["--model-source", str(model_source)]
        if config:
            args += ["--config", json.dumps(config)]
        if debug_enclave:
            args.append("--debug-enclave")
        if threads:
            args += ["--threads", str(threads)]
        if run_as is not None:
            args += ["--run-as", f"{run_as[0]}:{run_as[1]}"]
        cmd = launch.command(package_root().parent, args)
        proc = spawn(
            cmd, stdin=subprocess.DEVNULL, env=launch.ENV, pass_fds=(listener.fileno(),), cwd="/"
        )
    except BaseException:
        shutil.rmtree(sock_dir, ignore_errors=True)
        raise
    finally:
        listener.close()  # the enclave alone accepts on it
    link = EnclaveLink(path, proc)
    try:
        info = _wait_ready(link, ready_timeout)
    except BaseException:
        stop_enclave(link, sock_dir)
        raise
    return link, info, sock_dir


def stop_enclave(link: EnclaveLink, sock_dir: str | None) -> None:
    """Stop the enclave process (SIGTERM, then SIGKILL after 5 s) and remove its socket folder."""
    if link.proc is not None and link.proc.poll() is None:
        link.proc.terminate()
        try:
            link.proc.wait(5)
        except subprocess.TimeoutExpired:
            link.proc.kill()
            link.proc.wait()
    if sock_dir:
        shutil.rmtree(sock_dir, ignore_errors=True)


def enclave_user(insecure_same_user: bool, user: str | None) -> tuple[int, int] | None:
    """The (uid, gid) the enclave serves as, or None to keep this process's user (only with
    `insecure_same_user`). Needs root: only root can start a process as another user."""
    from privinfer.tee.isolation import DEFAULT_ENCLAVE_USER, ensure_user, is_root

    if insecure_same_user:
        if user is not None:
            raise InputError("--enclave-user and --insecure-same-user exclude each other")
        return None
    if not is_root():
        raise InputError(
            "privinfer tee serve must run as root to start the enclave as its own user "
            "(--enclave-user); pass --insecure-same-user to run both as you (the host is then "
            "not protected from the enclave's keys)"
        )
    return ensure_user(user or DEFAULT_ENCLAVE_USER)
