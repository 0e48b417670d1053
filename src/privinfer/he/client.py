"""HE client runs: in-process, against a local server subprocess, or against a remote server.

Security assumption: the client process holds the secret key, its text and token ids; it sends
the server only public keys and ciphertexts, answers refresh requests on masked values and
decrypts only the outputs addressed to it (`he.session`). The local-server convenience starts
`privinfer he serve` as a separate process with its own memory; identities come from a 2-party
CA (`he.transport`). That server dies with the process that started it (`net.lifetime`, SIGKILL
included); SIGTERM or Ctrl-C in the starting process stops it and deletes its temp folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import InputError, SecurityError
from privinfer.he.ckks import PARAMS_16384
from privinfer.he.limits import DEFAULT_MAX_SESSIONS
from privinfer.he.server import pack_bundle
from privinfer.he.session import HeClient, client_rows
from privinfer.he.transport import (
    STOP_CODE,
    Connection,
    TransportError,
    connect,
    default_cert_dir,
    ensure_identities,
)
from privinfer.net.cluster import load_cluster, parse_hostport
from privinfer.net.lifetime import sigterm_as_exit, spawn
from privinfer.net.peer import PeerError


def run_client_session(
    conn: Connection,
    client: HeClient,
    task: dict[str, Any],
    first_rows: torch.Tensor,
    next_rows: Callable[[int], torch.Tensor] | None = None,
    on_token: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Answer the server's requests until DONE; returns the server's closing stats."""
    conn.send("HELO", task, pack_bundle(client.public_bundle()))
    try:
        return _answer(conn, client, first_rows, next_rows, on_token)
    except PeerError:
        raise  # the server ended the session: nothing to tell it
    except (SecurityError, InputError) as exc:
        try:  # tell the server why it stops here (a fixed reason, never a value)
            conn.send("ERR", {"code": STOP_CODE, "reason": type(exc).__name__})
        except TransportError:
            pass
        raise


def _answer(
    conn: Connection,
    client: HeClient,
    first_rows: torch.Tensor,
    next_rows: Callable[[int], torch.Tensor] | None,
    on_token: Callable[[int], None] | None,
) -> dict[str, Any]:
    pending: torch.Tensor | None = first_rows
    while True:
        kind, meta, payload = conn.recv()
        if kind == "KEYS":
            steps, data = client.galois([int(s) for s in meta.get("steps", [])])
            conn.send("KEYS", {"steps": steps}, data)
        elif kind == "RFSH":
            conn.send("RFSH", {}, client.refresh(payload))
        elif kind == "UPLD":
            if pending is None or int(meta.get("rows", -1)) != pending.shape[0]:
                raise InputError("The HE server asked for input the client did not expect.")
            conn.send("UPLD", {}, client.encrypt_rows(meta, pending))
            pending = None
        elif kind == "OUTP":
            client.reveal(meta, payload)
            conn.send("OUTP", {})
        elif kind == "LOGT":
            before = len(client.chosen)
            tok = client.choose(meta, payload)
            if on_token is not None and len(client.chosen) > before:
                on_token(client.chosen[-1])
            if tok is not None and next_rows is not None:
                pending = next_rows(tok)
            conn.send("LOGT", {"stop": tok is None})
        elif kind == "DONE":
            return meta
        else:
            raise InputError(f"Unexpected HE message {kind!r}.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(
    model_name: str, sessions: int, *, ready_timeout_s: float = 300.0
) -> Iterator[tuple[Any, str, int]]:
    """Start `privinfer he serve` as a subprocess with fresh identities in a `privinfer-he-*` temp
    folder; yield (cluster, host, port). On exit, normal or by exception (SIGTERM counts, see
    `net.lifetime.sigterm_as_exit`), the server gets up to 30 s to finish its sessions, then
    SIGTERM (its session workers stop with it), and the folder is deleted."""
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="privinfer-he-") as tmp:
        port = _free_port()
        cluster = ensure_identities(Path(tmp) / "certs", port)
        ready = Path(tmp) / "ready"
        cmd = [sys.executable, "-m", "privinfer.cli", "he", "serve", "--model", model_name]
        cmd += ["--port", str(port), "--certs", str(Path(tmp) / "certs")]
        cmd += ["--sessions", str(sessions), "--ready-file", str(ready)]
        proc = spawn(cmd, stdin=subprocess.DEVNULL)
        clean = False
        try:
            deadline = time.monotonic() + ready_timeout_s
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise InputError("The local HE server did not start.")
                time.sleep(0.2)
            yield cluster, "127.0.0.1", port
            clean = True
        finally:
            _stop_server(proc, 30.0 if clean else 0.0)


def _stop_server(proc: subprocess.Popen[Any], grace_s: float) -> None:
    try:
        proc.wait(timeout=grace_s)
        return
    except subprocess.TimeoutExpired:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _endpoint(server: str | None) -> tuple[Any, str, int] | None:
    if server is None:
        return None
    host, port = parse_hostport(server.removeprefix("https://").removeprefix("tls://"))
    certs = Path(os.environ.get("PRIVINFER_HE_CERTS", default_cert_dir()))
    return load_cluster(certs), host, port


@contextmanager
def _server_for(model: Any, server: str | None, sessions: int):
    ep = _endpoint(server)
    if ep is not None:
        yield ep
    else:
        with local_server(str(model.source), sessions) as ep2:
            yield ep2


def _embed_one(model: Any, ids: list[int], endpoint: tuple[Any, str, int]) -> tuple[Any, dict]:
    cluster, host, port = endpoint
    client = HeClient.create(PARAMS_16384)
    conn = connect(cluster, host, port)
    try:
        done = run_client_session(
            conn, client, {"task": "embed", "rows": len(ids)}, client_rows(model, ids)
        )
    finally:
        conn.close()
    figures = {
        "rounds": int(done.get("rounds", 0)),
        "bytes_to_server": conn.bytes_sent,
        "bytes_to_client": conn.bytes_received,
    }
    return client.output, figures


def embed_remote(
    model: Any, ids_list: list[list[int]], server: str | None, parallel: int = DEFAULT_MAX_SESSIONS
) -> tuple[torch.Tensor, dict]:
    """Embed each id list over TLS (a local server subprocess when `server` is None), up to
    `parallel` texts at once (one session each: the server runs each in its own process,
    and a server's default cap is 2 sessions)."""
    stats = {"rounds": 0, "bytes_to_server": 0, "bytes_to_client": 0}
    workers = max(1, min(parallel, len(ids_list)))
    with _server_for(model, server, len(ids_list)) as endpoint:
        if workers == 1:
            results = [_embed_one(model, ids, endpoint) for ids in ids_list]
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(lambda ids: _embed_one(model, ids, endpoint), ids_list))
    for _, figures in results:
        for k in stats:
            stats[k] += figures[k]
    return torch.cat([out for out, _ in results]), stats
