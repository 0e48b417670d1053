"""HE server: runs BERT embeddings or LLaMA generation on ciphertexts for remote key holders.

Security assumption: semi-honest server holding the weights in plaintext and, per session, only
the client's public, relinearisation and Galois keys (`CkksContext.from_public`); it never
holds a secret key, never sees token ids (the client uploads encrypted embedding rows) and sees
only masked values during refresh. A session that fails (wrong key, another session's
ciphertexts, insecure parameters, too long input) gets a one-sentence error and the server
goes on serving other clients. Nothing about a client's data is logged: the log (stderr) has
one line per session start and end with a server-local session number, the outcome, duration,
refresh rounds and byte counts, and per-layer progress; never values, keys, ciphertexts or
client-supplied strings.

Concurrency: each session runs in its own forked worker process (POSIX), at most
`max_sessions` at once; the model weights are shared copy-on-write and read-only, while
every per-session object (CKKS context, keys, refresher, connection) is created inside the
worker, so sessions share no mutable state, a failing or crashing session (even one killed for
memory) ends only its own worker, and its memory (SEAL's pool keeps its peak) goes back to the
system when the worker exits. A client beyond the cap gets `ERR` with code "busy" at once.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from privinfer.errors import InputError, PrivinferError
from privinfer.he.ckks import CkksParams
from privinfer.he.limits import DEFAULT_MAX_SESSIONS
from privinfer.he.ops import HeOps
from privinfer.he.ranges import HeRanges, minilm_ranges
from privinfer.he.session import pack_meta, unpack_meta
from privinfer.he.transport import (
    BUSY_CODE,
    Connection,
    PeerStopped,
    TransportError,
    handshake,
    listen,
)
from privinfer.models import families
from privinfer.models.generate import GenerationStats, decode_loop
from privinfer.net.lifetime import die_with

MAX_EMBED_TOKENS = 32  # T <= 32 keeps a BERT-base-width head block in one ciphertext
MAX_BUSY_RESPONDERS = 4  # beyond these, extra clients are disconnected without a message


class RemoteKeyHolder:
    """The server's view of a client over a `Connection` (see `he.session.KeyHolder`)."""

    def __init__(self, conn: Connection, bundle: dict[str, bytes]) -> None:
        self.conn, self._bundle = conn, bundle

    def public_bundle(self) -> dict[str, bytes]:
        return self._bundle

    def _ask(self, kind: str, meta: dict[str, Any], payload: bytes = b"") -> tuple[dict, bytes]:
        self.conn.send(kind, meta, payload)
        _, got, data = self.conn.recv(kind)
        return got, data

    def galois(self, steps) -> tuple[list[int], bytes]:
        meta, data = self._ask("KEYS", {"steps": [int(s) for s in steps]})
        return [int(s) for s in meta.get("steps", [])], data

    def refresh(self, payload: bytes) -> bytes:
        return self._ask("RFSH", {}, payload)[1]

    def upload(self, meta: dict[str, Any], rows: torch.Tensor | None) -> bytes:
        return self._ask("UPLD", meta)[1]  # `rows` (dummy ids on a server) is never used

    def reveal(self, meta: dict[str, Any], payload: bytes) -> None:
        self._ask("OUTP", meta, payload)
        return None

    def choose(self, meta: dict[str, Any], payload: bytes) -> int | None:
        got, _ = self._ask("LOGT", meta, payload)
        return None if got.get("stop") else 0


def pack_bundle(bundle: dict[str, bytes]) -> bytes:
    sizes = {k: len(v) for k, v in bundle.items()}
    return pack_meta(sizes, b"".join(bundle[k] for k in sizes))


def unpack_bundle(data: bytes) -> dict[str, bytes]:
    sizes, blob = unpack_meta(data)
    out, pos = {}, 0
    for k, n in sizes.items():
        if k not in {"params", "public_key", "relin_keys", "galois_keys", "galois_steps"}:
            raise InputError("Unexpected field in the HE key bundle.")
        out[k] = blob[pos : pos + int(n)]
        pos += int(n)
    if pos != len(blob) or "params" not in out or "public_key" not in out:
        raise InputError("Malformed HE key bundle.")
    return out


def embed_session(model: Any, ops: HeOps, rows: int) -> torch.Tensor:
    """Server side of one embedding: the rows come encrypted from the key holder."""
    if not 0 < rows <= MAX_EMBED_TOKENS:
        raise InputError(f"HE embedding takes 1..{MAX_EMBED_TOKENS} tokens, got {rows}.")
    encoder = model.build(ops)
    return ops.reveal(encoder.encode([0] * rows))


def generation_session(
    model: Any, ops: HeOps, ids: list[int], max_new_tokens: int
) -> Iterator[int]:
    """Server side of one generation; yields after each token the key holder chose (and ends
    when the key holder says stop, after `max_new_tokens`, or at the context's end)."""
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1")
    decoder = model.build(ops)
    cache = decoder.new_cache()

    def step(step_ids: list[int], pos: int, i: int) -> int:
        return ops.next_token(decoder.forward(step_ids, cache, pos), None, i)  # type: ignore[arg-type]

    budget = max(1, min(max_new_tokens, ops.context_tokens - len(ids) + 1))
    # The server never learns a token: the key holder's stop arrives as -1.
    yield from decode_loop(step, ids, budget=budget, stop_ids=(-1,), stats=GenerationStats())


def model_ranges(model: Any) -> HeRanges:
    """Public calibrated ranges for a served model (MiniLM-L6 built in; else calibrate now)."""
    encoder = families.get(model.cfg).task == "embed"
    if encoder and model.cfg.hidden_size == 384:
        return minilm_ranges()
    from privinfer.he.calibrate import SENTENCES, calibrate_decoder, calibrate_encoder

    if encoder:
        rec = calibrate_encoder(model, [model.token_ids(s) for s in SENTENCES[:6]])
    else:
        rec = calibrate_decoder(model, [model.tokenizer.encode(s) for s in SENTENCES[:4]])
    return HeRanges.from_calibration(rec)


@dataclass
class SessionSummary:
    """What the log may say about a session: no values, no keys, no client strings."""

    outcome: str = "dropped"  # done | refused (<error class>) | dropped
    task: str = "-"
    rounds: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0

    def line(self, number: int) -> str:
        return (
            f"session {number} end: {self.outcome}, task {self.task}, {self.seconds:.1f} s, "
            f"{self.rounds} refresh rounds, {self.bytes_in / 1e6:.1f} MB in, "
            f"{self.bytes_out / 1e6:.1f} MB out"
        )


def _refuse(conn: Connection, message: str) -> None:
    try:
        conn.send("ERR", {"message": message})
    except TransportError:
        pass


def handle_session(
    conn: Connection, model: Any, ranges: HeRanges, log: Callable[[str], None]
) -> SessionSummary:
    """One client session: HELO (task + public keys) ... DONE, or ERR with one sentence."""
    t0 = time.perf_counter()
    out = SessionSummary()
    ops: HeOps | None = None
    try:
        _, meta, payload = conn.recv("HELO")
        bundle = unpack_bundle(payload)
        CkksParams.from_bytes(bundle["params"]).check_security()
        task = meta.get("task")
        out.task = task if task in ("embed", "generate") else "other"
        holder = RemoteKeyHolder(conn, bundle)
        served = families.get(model.cfg)
        if served.input_rows is None:
            raise InputError(f"This HE server cannot run {served.name} models.")
        if task == "embed" and served.task == "embed":
            if not 0 < int(meta.get("rows", 0)) <= MAX_EMBED_TOKENS:
                raise InputError(f"HE embedding takes 1..{MAX_EMBED_TOKENS} tokens per text.")
            ops = HeOps(keyholder=holder, ranges=ranges, progress=log)
            embed_session(model, ops, int(meta.get("rows", 0)))
        elif task == "generate" and served.task == "generate":
            ctx_t = int(meta.get("context_tokens", 0))
            if ctx_t < 2 or ctx_t & (ctx_t - 1) or ctx_t > 64:
                raise InputError("HE context_tokens must be a power of two in [2, 64].")
            ops = HeOps(keyholder=holder, ranges=ranges, context_tokens=ctx_t, progress=log)
            for _ in generation_session(
                model, ops, [0] * int(meta["prompt_len"]), int(meta["max_new_tokens"])
            ):
                pass
        else:
            raise InputError(f"This HE server does not run task {task!r} for its model.")
        out.rounds = ops.refresher.stats.rounds
        conn.send("DONE", {"rounds": out.rounds, "server_s": round(time.perf_counter() - t0, 3)})
        out.outcome = "done"
    except TransportError:
        out.outcome = "dropped"
    except PeerStopped as exc:  # the client already left: log why (a fixed reason), no reply
        out.outcome = f"stopped by client ({exc.reason})"
    except PrivinferError as exc:
        out.outcome = f"refused ({type(exc).__name__})"
        _refuse(conn, str(exc))
    except (KeyError, ValueError, TypeError):
        out.outcome = "refused (malformed request)"
        _refuse(conn, "Malformed HE request.")
    except Exception as exc:  # noqa: BLE001 - one failed session must not end the worker silently
        out.outcome = f"failed ({type(exc).__name__})"
        _refuse(conn, "The HE server failed on this session.")
    finally:
        conn.close()
    if ops is not None:
        out.rounds = ops.refresher.stats.rounds
    out.bytes_in, out.bytes_out = conn.bytes_received, conn.bytes_sent
    out.seconds = time.perf_counter() - t0
    return out


def _stderr_log(msg: str) -> None:
    sys.stderr.write(f"he-server: {msg}\n")  # one write per line: workers share stderr
    sys.stderr.flush()


def _worker(target: Callable[[], None]) -> int:
    """Fork a worker that runs `target` and exits (and dies with the server, SIGKILL included);
    returns its pid in the parent."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        die_with(parent)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        torch.set_num_threads(1)  # OpenMP's pool does not survive fork; sessions run in parallel
        target()
    except BaseException:  # noqa: BLE001 - a worker never returns into the parent's loop
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run_session(
    raw: socket.socket, ctx: ssl.SSLContext, model: Any, ranges: HeRanges, number: int, log
) -> None:
    t0 = time.perf_counter()
    try:
        conn = handshake(raw, ctx)
    except TransportError:
        failed = SessionSummary("handshake failed", seconds=time.perf_counter() - t0)
        log(failed.line(number))
        return
    summary = handle_session(conn, model, ranges, lambda m: log(f"session {number}: {m}"))
    log(summary.line(number))


def _answer_busy(raw: socket.socket, ctx: ssl.SSLContext, drain_s: float = 30.0) -> None:
    """Tell a client beyond the cap that the server is busy, then discard what it still sends
    (its HELO) until it hangs up, so that closing cannot reset the connection before the client
    has read the answer. Nothing it sends is kept."""
    try:
        conn = handshake(raw, ctx, timeout_s=10.0)
    except TransportError:
        return
    try:
        conn.send("ERR", {"message": "The HE server is busy; try again later.", "code": BUSY_CODE})
        deadline = time.monotonic() + drain_s
        conn.sock.settimeout(5.0)
        while time.monotonic() < deadline and conn.sock.recv(1 << 20):
            pass
    except (TransportError, OSError):
        pass
    finally:
        conn.close()


class _Workers:
    """The parent's book of worker processes (session workers and busy responders)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.sessions: dict[int, int] = {}  # pid -> session number
        self.responders: set[int] = set()

    def reap(self, block: bool = False) -> None:
        for pid in [*self.sessions, *self.responders]:
            try:
                got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                got, status = pid, 0
            if got == 0:
                continue
            number = self.sessions.pop(pid, None)
            self.responders.discard(pid)
            if number is not None and os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                self.log(f"session {number} end: worker killed by signal {sig}")

    def stop(self) -> None:
        for pid in [*self.sessions, *self.responders]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.reap(block=True)


def serve(
    model: Any,
    cluster,
    host: str,
    port: int,
    sessions: int = 0,
    ready: Callable[[int], None] | None = None,
    ranges: HeRanges | None = None,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    log: Callable[[str], None] | None = None,
) -> None:
    """Serve up to `max_sessions` sessions at once, each in a forked worker; return after
    `sessions` sessions have started and ended (serve forever when sessions == 0)."""
    if max_sessions < 1:
        raise InputError("--max-sessions must be at least 1.")
    if not hasattr(os, "fork"):
        raise InputError("The HE server needs a POSIX system: it forks a process per session.")
    log = log or _stderr_log
    ranges = ranges or model_ranges(model)
    srv, ctx = listen(cluster, host, port)
    srv.settimeout(0.2)  # wake up to reap finished workers
    bound = srv.getsockname()[1]
    log(f"serving {getattr(model, 'name', 'model')} on {host}:{bound}, {max_sessions} at once")
    if ready is not None:
        ready(bound)
    workers, started = _Workers(log), 0
    try:
        with srv:
            while sessions == 0 or started < sessions:
                workers.reap()
                try:
                    raw, _ = srv.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    log(f"accept failed ({type(exc).__name__})")
                    time.sleep(0.5)
                    continue
                if len(workers.sessions) >= max_sessions:
                    if len(workers.responders) < MAX_BUSY_RESPONDERS:
                        workers.responders.add(
                            _worker(lambda r=raw: (srv.close(), _answer_busy(r, ctx)))
                        )
                    log(f"client turned away: busy ({len(workers.sessions)} sessions running)")
                    raw.close()
                    continue
                started += 1
                number = started
                running = len(workers.sessions) + 1
                log(f"session {number} start ({running} of {max_sessions} running)")

                def run(r=raw, n=number) -> None:
                    srv.close()
                    _run_session(r, ctx, model, ranges, n, log)

                workers.sessions[_worker(run)] = number
                raw.close()
        while workers.sessions or workers.responders:  # not listening any more
            workers.reap()
            time.sleep(0.1)
    finally:
        workers.stop()
