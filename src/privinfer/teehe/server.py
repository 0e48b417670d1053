"""The tee+he server: runs the model on the client's ciphertexts with a refresh enclave as the
key holder for every step that needs the secret key, so the client is free between submit and
fetch (embeddings) or answers once per token (generation).

Security assumption: as the he server (he/server.py): semi-honest, plaintext weights, public keys
only, sees masked values and ciphertexts. Routing (`HybridKeyHolder`): Galois keys and refreshes
go to the enclave (one mutual-TLS connection per session; the enclave refuses any other session's
requests); the encrypted input comes from the client once, with the submit; the encrypted output
is stored by job id (ciphertext under the client's key; the job id, 128 random bits, is the
capability to fetch it) and sent to the client if it waits; generation's logits go to the client,
which answers with the next token's encrypted row. The key release (ATST, KREL) is relayed
between client and enclave; the server sees the quote, public keys and one AES-GCM record.

Faults: a dropped enclave connection is noticed within 0.2 s, also between refreshes (a watcher
thread peeks at the socket while no call is in flight); the session's error is stored for its
job, sent to a waiting client, and the session's process exits, discarding its state. Logs hold
session numbers, outcomes, durations and counts, never values, keys, job ids or client strings.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import InputError, PrivinferError
from privinfer.he.ckks import CkksParams
from privinfer.he.ops import HeOps
from privinfer.he.ranges import HeRanges
from privinfer.he.server import (
    MAX_EMBED_TOKENS,
    _answer_busy,
    _stderr_log,
    _worker,
    _Workers,
    embed_session,
    generation_session,
    model_ranges,
)
from privinfer.he.transport import Connection, PeerRefused, TransportError, handshake, listen
from privinfer.models import families
from privinfer.net.cluster import ClusterConfig
from privinfer.teehe.jobs import Jobs
from privinfer.teehe.launch import connect_enclave

ENCLAVE_GONE = "The refresh enclave stopped during the session; the session was discarded."
POLL_S = 0.2


class EnclaveGone(PrivinferError):
    def __init__(self) -> None:
        super().__init__(ENCLAVE_GONE)


class EnclaveSession:
    """The server's connection to the enclave for one session; calls are serialised."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.lock, self.session = conn, threading.Lock(), ""
        self.calls, self.closing = 0, False

    def call(self, kind: str, meta: dict[str, Any], payload: bytes = b"") -> tuple[dict, bytes]:
        with self.lock:
            try:
                self.conn.send(kind, meta, payload)
                _, got, data = self.conn.recv(kind)
            except TransportError:
                raise EnclaveGone() from None
        self.calls += 1
        return got, data

    def dropped(self) -> bool:
        """Whether the enclave closed the connection (checked only while no call is in flight)."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if self.closing:  # the session ended: the enclave closes on purpose
                return False
            sock = self.conn.sock
            if sock.fileno() < 0:
                return True
            if not select.select([sock], [], [], 0)[0] or sock.pending():
                return False
            try:
                return socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True
        finally:
            self.lock.release()


class HybridKeyHolder:
    """`he.session.KeyHolder` for the server: enclave for keys and refreshes, client for the
    input (given once), stored output, and (generation) the next token."""

    def __init__(self, enclave: EnclaveSession, bundle: dict[str, bytes], client: ClientSide):
        self.enclave, self.bundle, self.client = enclave, bundle, client
        self.uploads: dict[int, tuple[dict[str, Any], bytes]] = {}
        self.result: tuple[dict[str, Any], bytes] | None = None

    def public_bundle(self) -> dict[str, bytes]:
        return self.bundle

    def galois(self, steps) -> tuple[list[int], bytes]:
        meta, data = self.enclave.call(
            "KEYS", {"session": self.enclave.session, "steps": list(steps)}
        )
        return [int(s) for s in meta.get("steps", [])], data

    def refresh(self, payload: bytes) -> bytes:
        return self.enclave.call("RFSH", {"session": self.enclave.session}, payload)[1]

    def upload(self, meta: dict[str, Any], rows: torch.Tensor | None) -> bytes:
        want = {k: int(meta[k]) for k in ("tokens", "start", "rows")}
        got = self.uploads.pop(want["start"], None)
        if got is None or {k: int(got[0].get(k, -1)) for k in want} != want:
            raise InputError("The client's encrypted input does not match this model's packing.")
        return got[1]

    def reveal(self, meta: dict[str, Any], payload: bytes) -> None:
        self.result = (meta, payload)

    def choose(self, meta: dict[str, Any], payload: bytes) -> int | None:
        got, data = self.client.ask("LOGT", meta, payload)
        if got.get("stop"):
            return None
        up = got.get("upload")
        if not isinstance(up, dict):
            raise InputError("The client's next-token answer holds no encrypted row.")
        self.uploads[int(up.get("start", -1))] = (up, data)
        return 0


class ClientSide:
    """The client's connection; it may leave after the submit (embeddings)."""

    def __init__(self, conn: Connection, waits: bool) -> None:
        self.conn, self.waits, self.lock = conn, waits, threading.Lock()

    def ask(self, kind: str, meta: dict[str, Any], payload: bytes) -> tuple[dict, bytes]:
        with self.lock:
            try:
                self.conn.send(kind, meta, payload)
                _, got, data = self.conn.recv(kind)
            except TransportError:
                raise InputError("The client left during generation; the session ended.") from None
        return got, data

    def tell(self, kind: str, meta: dict[str, Any], payload: bytes = b"") -> None:
        if not self.waits:
            return
        with self.lock:
            try:
                self.conn.send(kind, meta, payload)
            except TransportError:
                self.waits = False  # it left: the job's file still holds the answer


def _split(blob: bytes, sizes: dict[str, int]) -> dict[str, bytes]:
    out, pos = {}, 0
    for k, n in sizes.items():
        out[k] = blob[pos : pos + int(n)]
        pos += int(n)
    return out


class Config:
    """What a session needs besides its connection (shared, read-only, by every worker)."""

    def __init__(self, model: Any, ranges: HeRanges, enclave: tuple[ClusterConfig, str, int],
                 jobs: Jobs, log: Callable[[str], None]) -> None:  # fmt: skip
        self.model, self.ranges, self.enclave, self.jobs, self.log = (
            model,
            ranges,
            enclave,
            jobs,
            log,
        )


def _release_key(
    conn: Connection, meta: dict[str, Any], cfg: Config
) -> tuple[EnclaveSession, dict]:
    """Relay the attested key release between client and enclave; the enclave's bundle."""
    enclave = EnclaveSession(connect_enclave(*cfg.enclave))
    got, quote = enclave.call("ATST", {"nonce": str(meta.get("nonce", ""))})
    enclave.session = str(got["session"])
    conn.send("ATST", got, quote)
    _, km, record = conn.recv("KREL")
    got, data = enclave.call("KREL", {"pub": str(km.get("pub", ""))}, record)
    n_ack = int(got["ack"])
    conn.send("KREL", {}, data[:n_ack])
    bundle = _split(data[n_ack:], got["bundle"])
    CkksParams.from_bytes(bundle["params"]).check_security()
    return enclave, bundle


def _compute(task: dict[str, Any], holder: HybridKeyHolder, cfg: Config, log) -> dict[str, Any]:
    model = cfg.model
    served = families.get(model.cfg)
    name = task.get("task")
    if name == "embed" and served.task == "embed":
        rows = int(task.get("rows", 0))
        if not 0 < rows <= MAX_EMBED_TOKENS:
            raise InputError(f"HE embedding takes 1..{MAX_EMBED_TOKENS} tokens per text.")
        ops = HeOps(keyholder=holder, ranges=cfg.ranges, progress=log)
        embed_session(model, ops, rows)
    elif name == "generate" and served.task == "generate":
        ctx_t = int(task.get("context_tokens", 0))
        if ctx_t < 2 or ctx_t & (ctx_t - 1) or ctx_t > 64:
            raise InputError("HE context_tokens must be a power of two in [2, 64].")
        ops = HeOps(keyholder=holder, ranges=cfg.ranges, context_tokens=ctx_t, progress=log)
        prompt = [0] * int(task["prompt_len"])
        for _ in generation_session(model, ops, prompt, int(task["max_new_tokens"])):
            pass
    else:
        raise InputError(f"This tee+he server does not run task {name!r} for its model.")
    return {"rounds": ops.refresher.stats.rounds, "enclave_calls": holder.enclave.calls}


def _watch(enclave: EnclaveSession, on_drop: Callable[[], None], stop: threading.Event) -> None:
    while not stop.wait(POLL_S):
        if enclave.dropped():
            on_drop()
            return


def handle_client(conn: Connection, cfg: Config, log: Callable[[str], None]) -> str:
    """One client connection: FTCH (a stored job), or ATST, KREL, SUBM (a new job)."""
    kind, meta, payload = conn.recv()
    if kind == "FTCH":
        got = cfg.jobs.take(str(meta.get("job", "")), min(float(meta.get("wait_s", 600)), 3600))
        conn.send(*got)
        return "fetched" if got[0] == "RSLT" else "fetched an error"
    if kind != "ATST":
        raise InputError("A tee+he session starts with ATST or FTCH.")
    try:
        enclave, bundle = _release_key(conn, meta, cfg)
    except (EnclaveGone, TransportError) as exc:
        if isinstance(exc, TransportError) and "refresh enclave" not in str(exc):
            raise
        raise InputError("The refresh enclave is unreachable; nothing was computed.") from None
    _, task, upload = conn.recv("SUBM")
    job = secrets.token_hex(16)
    client = ClientSide(conn, bool(task.get("wait", True)))
    conn.send("JOB", {"job": job})
    holder = HybridKeyHolder(enclave, bundle, client)
    if isinstance(task.get("upload"), dict):
        holder.uploads[int(task["upload"].get("start", 0))] = (task["upload"], upload)
    stop = threading.Event()

    def dropped() -> None:
        log(ENCLAVE_GONE)
        cfg.jobs.failed(job, ENCLAVE_GONE)
        client.tell("ERR", {"message": ENCLAVE_GONE})
        os._exit(2)  # discard the session's state with its process

    threading.Thread(target=_watch, args=(enclave, dropped, stop), daemon=True).start()
    try:
        figures = _compute(task, holder, cfg, log)
    except Exception as exc:  # the job gets its one sentence whatever failed, then re-raise
        stop.set()
        enclave.closing = True
        if isinstance(exc, TransportError):
            message = ENCLAVE_GONE
        elif isinstance(exc, PrivinferError):
            message = str(exc)  # fixed sentences (he, enclave): no values, no client strings
        else:
            message = "The tee+he server failed on this session."
        cfg.jobs.failed(job, message)
        client.tell("ERR", {"message": message})
        raise
    stop.set()
    enclave.closing = True
    try:
        figures["enclave"] = enclave.call("DONE", {})[0]  # its CPU time and peak memory
    except EnclaveGone:
        pass
    meta_out, payload_out = holder.result or ({}, b"")
    cfg.jobs.done(job, {**meta_out, "figures": figures}, payload_out)
    client.tell("RSLT", {**meta_out, "figures": figures}, payload_out)
    if client.waits:
        cfg.jobs.take(job, 0)  # delivered: nothing stays stored
    return "done"


def _run(raw: socket.socket, ctx: ssl.SSLContext, cfg: Config, number: int) -> None:
    log = cfg.log
    t0 = time.perf_counter()
    try:
        conn = handshake(raw, ctx)
    except TransportError:
        log(f"session {number} end: handshake failed")
        return
    try:
        outcome = handle_client(conn, cfg, lambda m: log(f"session {number}: {m}"))
    except PeerRefused:
        outcome = "stopped by the client or the enclave"
    except TransportError:
        outcome = "dropped"
    except PrivinferError as exc:
        outcome = f"refused ({type(exc).__name__})"
        _refuse(conn, str(exc))
    except (KeyError, ValueError, TypeError):
        outcome = "refused (malformed request)"
        _refuse(conn, "Malformed tee+he request.")
    except Exception as exc:  # noqa: BLE001 - one failed session must not end silently
        outcome = f"failed ({type(exc).__name__})"
        _refuse(conn, "The tee+he server failed on this session.")
    finally:
        conn.close()
    log(f"session {number} end: {outcome}, {time.perf_counter() - t0:.1f} s")


def _refuse(conn: Connection, message: str) -> None:
    try:
        conn.send("ERR", {"message": message})
    except TransportError:
        pass


def serve(
    model: Any,
    cluster: ClusterConfig,
    host: str,
    port: int,
    enclave: tuple[ClusterConfig, str, int],
    jobs_dir: Path,
    *,
    ready: Callable[[int], None] | None = None,
    ranges: HeRanges | None = None,
    max_sessions: int = 4,
    log: Callable[[str], None] | None = None,
) -> None:
    """Serve clients forever, each connection in a forked worker (at most `max_sessions`)."""
    if max_sessions < 1:
        raise InputError("--max-sessions must be at least 1.")
    log = log or (lambda m: _stderr_log(m.replace("he-server", "tee+he-server")))
    cfg = Config(model, ranges or model_ranges(model), enclave, Jobs(jobs_dir), log)
    srv, ctx = listen(cluster, host, port)
    srv.settimeout(POLL_S)
    bound = srv.getsockname()[1]
    log(f"tee+he: serving {getattr(model, 'name', 'model')} on {host}:{bound}")
    if ready is not None:
        ready(bound)
    workers, number = _Workers(log), 0
    try:
        with srv:
            while True:
                workers.reap()
                try:
                    raw, _ = srv.accept()
                except TimeoutError:
                    continue
                if len(workers.sessions) >= max_sessions:
                    workers.responders.add(
                        _worker(lambda r=raw: (srv.close(), _answer_busy(r, ctx)))
                    )
                    raw.close()
                    continue
                number += 1

                def run(r=raw, n=number) -> None:
                    srv.close()
                    _run(r, ctx, cfg, n)

                workers.sessions[_worker(run)] = number
                raw.close()
    finally:
        workers.stop()
        sys.stderr.flush()
