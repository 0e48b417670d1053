"""The mpc+he processes: the server loop (party 0, `privinfer mpc+he serve`), the client's
connection (party 1) and a local server started as a subprocess for one-machine use.

Transport: a two-party `net.cluster` (one CA, identities `privinfer-party-0` for the server and
`privinfer-party-1` for the client), mutually authenticated TLS 1.3 through `net.tls`; the
server listens, the client dials. The local server never outlives the process that started it
(`net.lifetime.spawn`), and its cluster folder (keys included) is deleted on exit.
Errors: a peer that dies or sends a malformed frame ends the session with a PeerError naming
the party (within the link's checks, at once for a closed connection); the server reports one
line on stderr without secrets and goes on to its next session.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from privinfer.errors import InputError, PrivinferError
from privinfer.net.cluster import free_ports, init_cluster, load_cluster
from privinfer.net.lifetime import sigterm_as_exit, spawn
from privinfer.net.tls import connect_parties
from privinfer.twopc.linear import LinearBackend
from privinfer.twopc.ring import DEFAULT_FRAC_BITS
from privinfer.twopc.runtime import N_PARTIES, TwoParty
from privinfer.twopc.session import serve_session

SERVER, CLIENT = 0, 1


def connect(
    cluster_path: str | Path,
    party_id: int,
    *,
    timeout_s: float = 120.0,
    connect_timeout_s: float = 20.0,
    frac_bits: int = DEFAULT_FRAC_BITS,
) -> TwoParty:
    """This process's party of a two-party cluster, connected and set up (base OTs, PRG key).
    Each side sends heartbeats every min(1, timeout_s / 4) s while it computes, so `timeout_s`
    bounds how long a frozen or vanished peer goes unnoticed, not how long a step may take."""
    cluster = load_cluster(cluster_path)
    if cluster.n_parties != N_PARTIES:
        raise InputError("an mpc+he cluster must have exactly two parties (server and client)")
    link = connect_parties(
        cluster,
        party_id,
        timeout_s,
        connect_timeout_s=connect_timeout_s,
        heartbeat_s=min(1.0, timeout_s / 4),
        close_linger_s=0.5,  # a failed session must not wait long for a silent peer's CLOSE
    )
    party = TwoParty(link, frac_bits)
    try:
        party.setup()
    except BaseException:
        link.close()
        raise
    return party


def serve(
    model: Any,
    cluster_path: str | Path,
    *,
    sessions: int = 0,
    timeout_s: float = 120.0,
    backend: Callable[[], LinearBackend] | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    """Serve `sessions` sessions (0: forever) one after another as party 0; returns how many
    failed. Each failure prints one line on stderr (the error names the party, never a value)."""
    failed = served = 0
    if ready is not None:
        ready()
    while sessions == 0 or served < sessions:
        served += 1
        try:
            party = connect(cluster_path, SERVER, timeout_s=timeout_s, connect_timeout_s=10**7)
        except PrivinferError as exc:
            print(f"privinfer mpc+he serve: session {served} failed: {exc}", file=sys.stderr)
            failed += 1
            continue
        try:
            serve_session(party, model, None if backend is None else backend())
        except PrivinferError as exc:
            print(f"privinfer mpc+he serve: session {served} failed: {exc}", file=sys.stderr)
            failed += 1
        finally:
            party.link.close()
    return failed


@contextlib.contextmanager
def local_server(
    model_source: str, sessions: int, *, threads: int = 1, ready_timeout_s: float = 300.0
) -> Iterator[Path]:
    """Start `privinfer mpc+he serve` for `sessions` sessions on loopback with a fresh two-party
    cluster in a temp folder; yield the cluster folder. The server dies with this process; on
    exit it gets 30 s to finish (none after an error), then SIGTERM, and the folder goes."""
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="privinfer-mpche-") as tmp:
        folder = Path(tmp) / "cluster"
        init_cluster(folder, [f"127.0.0.1:{p}" for p in free_ports(N_PARTIES)])
        ready = Path(tmp) / "ready"
        cmd = [sys.executable, "-m", "privinfer.cli", "mpc+he", "serve", "--model", model_source]
        cmd += ["--cluster", str(folder), "--sessions", str(sessions), "--threads", str(threads)]
        cmd += ["--ready-file", str(ready)]
        proc = spawn(cmd, stdin=subprocess.DEVNULL)
        clean = False
        try:
            deadline = time.monotonic() + ready_timeout_s
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise InputError("the local mpc+he server did not start")
                time.sleep(0.1)
            yield folder
            clean = True
        finally:
            _stop(proc, 30.0 if clean else 0.0)


def _stop(proc: subprocess.Popen[Any], grace_s: float) -> None:
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
