"""Enclave process: unseals the model into memory, attests sessions, decrypts requests, streams sealed tokens.

Security assumption: this process alone reads the platform directory (attestation key, sealing
secret) and sees plaintext; the host that launched it relays frames over a Unix socket and is
untrusted. On the software platform the separation is the OS user: the enclave serves as its
own user, which alone can read the platform directory (tee/isolation.py, docs/tee.md). Nothing here logs or raises with a prompt, a token, a key or a plaintext record.

Started by `privinfer tee serve` only, isolated and measured (tee/launch.py): it loads and checks
everything as the launcher's user, then drops to its own user (tee/isolation.py) to serve.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privinfer.engines.plain import PlainOps
from privinfer.errors import InputError, PrivinferError
from privinfer.tee.attestation import NONCE_LEN, attest
from privinfer.tee.batching import Batcher, PublicPrefix, run_session
from privinfer.tee.channel import (
    ChannelError,
    RecordType,
    SecureChannel,
    enclave_channel,
    public_bytes,
)
from privinfer.tee.enclave_model import load_model_from_memory, log, open_model
from privinfer.tee.isolation import drop_to, watch_parent
from privinfer.tee.launch import LaunchError
from privinfer.tee.measurement import EnclaveIdentity
from privinfer.tee.platform import Platform
from privinfer.tee.protocol import (
    MAX_CONTEXT,
    OP_ATTEST,
    OP_CLOSE,
    OP_GENERATE,
    OP_HEALTH,
    SESSION_ID_LEN,
    ST_DONE,
    ST_ERR,
    ST_OK,
    ST_RECORD,
    STATUS,
    ProtocolError,
    decode_message,
    enclave_config,
    encode_message,
    error_body,
    frame,
    parse_generate_body,
    recv_frame,
)
from privinfer.tee.providers import GramineProvider, QuoteProvider, SoftwareProvider
from privinfer.tee.request import parse_request

MAX_CONNECTIONS = 256


class Refused(Exception):
    """A request is refused with a protocol error code (no content in the message)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(code)
        self.code, self.message = code, message


@dataclass
class Session:
    """One attested session. It stays `pending` (short TTL, its own bound) until its first
    request's records open: only then has the client verified the quote and derived the channel
    key, and only then does it count against `max_sessions`."""

    sid: bytes
    key: X25519PrivateKey
    nonce: bytes
    quote: bytes
    created: float
    expires: float
    last_index: int = 0
    busy: bool = False
    pending: bool = True


# ---------------------------------------------------------------- the enclave service


class Enclave:
    """Sessions (bounded, with a TTL) and request handling; one scheduler thread runs the model,
    batching concurrent sessions' decode steps (tee/batching.py).

    Two bounds: `max_pending_sessions` sessions waiting for their handshake (each lives
    `pending_ttl_s`), and `max_sessions` sessions whose handshake completed (each lives
    `session_ttl_s` from its attestation). Both are part of the measured config."""

    def __init__(
        self, platform: Platform, identity: EnclaveIdentity, lm: Any, config: dict[str, Any]
    ) -> None:
        self.platform, self.identity, self.lm, self.config = platform, identity, lm, config
        self.quotes: QuoteProvider = SoftwareProvider(platform)
        self.model = lm.build(PlainOps())
        self.batcher = Batcher(self.model, max_batch=int(config["max_sessions"]))
        with torch.inference_mode():  # the default system turn's KV, once (public)
            self.prefix = PublicPrefix(self.model, lm)
        self._sessions: dict[bytes, Session] = {}
        self._expired: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._conns = threading.BoundedSemaphore(MAX_CONNECTIONS)

    # sessions
    def _purge(self, now: float) -> None:
        for sid in [s for s, v in self._sessions.items() if v.expires <= now]:
            self._end(sid, expired=True)

    def _end(self, sid: bytes, *, expired: bool = False) -> None:
        self._sessions.pop(sid, None)
        if expired:
            self._expired[sid] = None
            while len(self._expired) > 4096:
                self._expired.popitem(last=False)

    def _get(self, sid: bytes) -> Session:
        now = time.monotonic()
        s = self._sessions.get(sid)
        if s is not None and s.expires <= now:
            self._end(sid, expired=True)
            s = None
        if s is None:
            raise Refused("session_expired" if sid in self._expired else "unknown_session")
        return s

    def attest_session(self, body: bytes) -> bytes:
        nonce, context = body[:NONCE_LEN], body[NONCE_LEN:]
        if len(nonce) != NONCE_LEN or len(context) > MAX_CONTEXT:
            raise Refused("bad_request", "nonce must be 32 bytes, context at most 256")
        key = X25519PrivateKey.generate()
        pub = public_bytes(key)
        quote = attest(self.quotes, self.identity, pub, nonce, context)
        sid = secrets.token_bytes(SESSION_ID_LEN)
        with self._lock:
            now = time.monotonic()
            self._purge(now)
            pending = sum(s.pending for s in self._sessions.values())
            if len(self._sessions) - pending >= int(self.config["max_sessions"]):
                raise Refused("too_many_sessions", "the enclave's session limit is reached")
            if pending >= int(self.config["max_pending_sessions"]):
                raise Refused("too_many_sessions", "too many handshakes are in progress")
            ttl = min(float(self.config["pending_ttl_s"]), float(self.config["session_ttl_s"]))
            self._sessions[sid] = Session(sid, key, nonce, quote, now, now + ttl)
        return sid + pub + quote

    def _establish(self, s: Session) -> None:
        """The session's first request opened: it now counts against `max_sessions`."""
        with self._lock:
            if not s.pending:
                return
            self._purge(time.monotonic())  # expired sessions hold no slot
            if s.sid not in self._sessions:
                raise Refused("session_expired")
            established = sum(not v.pending for v in self._sessions.values())
            if established >= int(self.config["max_sessions"]):
                self._end(s.sid)
                raise Refused("too_many_sessions", "the enclave's session limit is reached")
            s.pending = False
            s.expires = s.created + float(self.config["session_ttl_s"])

    def close_session(self, sid: bytes) -> None:
        with self._lock:
            self._get(sid)
            self._end(sid)

    def health(self) -> bytes:
        with self._lock:
            self._purge(time.monotonic())
            pending = sum(s.pending for s in self._sessions.values())
            n = len(self._sessions) - pending
        return json.dumps(
            {
                "status": "ok",
                "measurement": self.identity.measurement.hex(),
                "debug": self.identity.debug,
                "sessions": n,
                "max_sessions": self.config["max_sessions"],
                "pending_sessions": pending,
                "max_pending_sessions": self.config["max_pending_sessions"],
                "session_ttl_s": self.config["session_ttl_s"],
                "pending_ttl_s": self.config["pending_ttl_s"],
            }
        ).encode()

    # generation
    def _open_request(self, s: Session, body: bytes) -> tuple[SecureChannel, dict[str, Any]]:
        try:
            idx, client_pub, records = parse_generate_body(body)
        except ProtocolError:
            raise Refused("bad_record", "generate body is malformed") from None
        if idx <= s.last_index:
            raise Refused("bad_record", "request index replayed")
        s.last_index = idx
        ch = enclave_channel(s.key, client_pub, s.nonce, s.quote, s.sid + struct.pack(">I", idx))
        data = bytearray()
        for rec in records:
            rtype, pt = ch.open(rec)
            if rtype is RecordType.DATA:
                data += pt
        ch.require_end()
        try:
            return ch, decode_message(bytes(data))
        except ProtocolError:
            raise Refused("bad_record", "request is not a JSON object") from None

    def generate(self, conn: socket.socket, body: bytes) -> None:
        sid = body[:SESSION_ID_LEN]
        with self._lock:
            s = self._get(sid)
            if s.busy:
                raise Refused("session_busy")
            s.busy = True
        try:
            try:
                ch, req = self._open_request(s, body[SESSION_ID_LEN:])
            except (ChannelError, ValueError, Refused) as exc:
                with self._lock:
                    self._end(sid)  # any bad record ends the session
                if isinstance(exc, Refused):
                    raise
                raise Refused("bad_record", "record rejected; session ended") from None
            self._establish(s)
            conn.sendall(frame(ST_OK))
            self._stream(conn, ch, req)
            conn.sendall(frame(ST_DONE))
        finally:
            s.busy = False

    def _send(self, conn: socket.socket, ch: SecureChannel, msg: dict[str, Any]) -> None:
        pad = int(self.config["record_pad"])
        conn.sendall(frame(ST_RECORD, ch.seal(RecordType.DATA, encode_message(msg, pad))))

    def _stream(self, conn: socket.socket, ch: SecureChannel, req: dict[str, Any]) -> None:
        try:
            run = parse_request(req, self.lm, int(self.config["max_new_tokens"]))
        except InputError as exc:
            # A refusal of the request's content: a bad_request (400) record, encrypted to the
            # client only. The message names the field and may show a number, never the prompt.
            msg = {"type": "error", "code": "bad_request", "status": STATUS["bad_request"]}
            self._send(conn, ch, {**msg, "message": str(exc)})
            conn.sendall(frame(ST_RECORD, ch.seal(RecordType.END, b"")))
            return
        for msg in self._run(*run):
            self._send(conn, ch, msg)
        conn.sendall(frame(ST_RECORD, ch.seal(RecordType.END, b"")))

    def _run(self, ids: list[int], sampler: Any, budget: int) -> Any:
        """One request's token and done messages (tee/batching.py: decode steps batched)."""
        return run_session(self.batcher, self.prefix, self.lm, ids, sampler, budget)

    # connections
    def handle(self, conn: socket.socket) -> None:
        try:
            kind, body = recv_frame(conn)
            try:
                if kind == OP_HEALTH:
                    conn.sendall(frame(ST_OK, self.health()))
                elif kind == OP_ATTEST:
                    conn.sendall(frame(ST_OK, self.attest_session(body)))
                elif kind == OP_CLOSE:
                    self.close_session(body)
                    conn.sendall(frame(ST_OK))
                elif kind == OP_GENERATE:
                    self.generate(conn, body)
                else:
                    raise Refused("bad_request", "unknown operation")
            except Refused as r:
                conn.sendall(frame(ST_ERR, error_body(r.code, r.message)))
        except (ProtocolError, OSError):
            pass  # the host went away; nothing to report
        except Exception as exc:  # never echo details: they could carry request content
            # A refused import names only the module (launch.forbid_new_imports).
            log(
                str(exc)
                if isinstance(exc, LaunchError)
                else f"internal error ({type(exc).__name__})"
            )
            try:
                conn.sendall(frame(ST_ERR, error_body("internal")))
            except OSError:
                pass
        finally:
            conn.close()
            self._conns.release()

    def serve(self, sock: socket.socket) -> None:
        while True:
            conn, _ = sock.accept()
            if not self._conns.acquire(blocking=False):
                try:
                    conn.sendall(frame(ST_ERR, error_body("overloaded")))
                finally:
                    conn.close()
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="privinfer enclave (started by privinfer tee serve)")
    p.add_argument("--platform", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--socket-fd", type=int, required=True, help="listening Unix socket, inherited")
    p.add_argument("--model-source", default=None)
    p.add_argument("--config", default=None, help="JSON overrides of the measured enclave config")
    p.add_argument("--debug-enclave", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--run-as", default=None, metavar="UID:GID", help="drop to this user to serve")
    p.add_argument(
        "--quotes",
        choices=("software", "gramine", "tdx", "snp"),
        default="software",
        help="where quotes come from: the software platform, Gramine-SGX's /dev/attestation, or "
        "the configfs TSM interface of a TDX or SEV-SNP guest",
    )
    return p.parse_args(argv)


def _hardware_quotes(kind: str) -> QuoteProvider | None:
    """The hardware quote provider `--quotes` names (None for the software platform); raises
    SecurityError when this machine is not that platform."""
    if kind == "gramine":
        return GramineProvider()
    if kind in ("tdx", "snp"):
        from privinfer.tee.tsm import hardware_provider

        return hardware_provider(kind)
    return None


def _start(args: argparse.Namespace) -> Enclave:
    """Everything before serving: open the model, warm up, attest once, check what is loaded."""
    from privinfer.tee.isolation import make_private
    from privinfer.tee.launch import check_isolated, loaded_outside
    from privinfer.tee.measurement import package_root
    from privinfer.tee.protocol import enclave_code_files

    check_isolated()
    hardware = _hardware_quotes(args.quotes)  # before sealing anything: fail fast off-platform
    run_as = tuple(int(x) for x in args.run_as.split(":")) if args.run_as else None
    config = enclave_config(json.loads(args.config) if args.config else None)
    if run_as is not None:  # the platform and data become the enclave user's alone
        Path(args.data).mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (args.platform, args.data):
            make_private(Path(d), *run_as)
    owner = run_as[0] if run_as else os.geteuid()
    platform = Platform(args.platform, owner=owner)
    src = Path(args.model_source) if args.model_source else None
    data, meta, identity = open_model(
        platform, Path(args.data), config, source=src, debug=args.debug_enclave
    )
    lm = load_model_from_memory(meta["name"], data)
    data[:] = bytes(len(data))
    del data
    enclave = Enclave(platform, identity, lm, config)
    if hardware is not None:
        enclave.quotes = hardware
        hardware.quote(identity, bytes(64))  # fail at start, not at the first client
    for req in (  # warm up, and import everything requests need (chat, sampling) before the check
        {"prompt": "Hello", "chat": True, "max_new_tokens": 2},
        {"prompt_ids": [1, 2], "max_new_tokens": 2, "temperature": 0.7, "top_p": 0.9, "seed": 1},
    ):
        for _ in enclave._run(*parse_request(req, lm, 2)):
            pass
    with torch.inference_mode():  # and the batched decode step (two fresh caches)
        caches = [enclave.model.new_cache() for _ in range(2)]
        for c in caches:
            enclave.model.forward([1, 2], c, 0)
        enclave.model.forward_batch([([3], caches[0], 2), ([4, 5], caches[1], 2)])
    sid = enclave.attest_session(bytes(NONCE_LEN))[:SESSION_ID_LEN]
    enclave.close_session(sid)
    if run_as is not None:  # files sealed or counted during start-up
        for d in (args.platform, args.data):
            make_private(Path(d), *run_as)
    bad = loaded_outside(package_root().parent, enclave_code_files())
    if bad:
        raise PrivinferError("loaded code outside the measurement: " + "; ".join(bad[:5]))
    return enclave


def main(argv: list[str] | None = None) -> int:
    """The enclave process (started only by `privinfer tee serve`, see tee/launch.py)."""
    args = _args(argv)
    parent = os.getppid()
    threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()
    import torch

    from privinfer.tee.launch import forbid_new_imports

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        enclave = _start(args)
        forbid_new_imports()
        if args.run_as:
            drop_to(*(int(x) for x in args.run_as.split(":")), parent)
    except (PrivinferError, ValueError, OSError) as exc:
        log(f"cannot start: {exc}")
        return 3
    sock = socket.socket(fileno=args.socket_fd)
    identity = enclave.identity
    log(
        f"ready in {time.perf_counter() - t0:.1f} s; measurement {identity.measurement.hex()[:16]}..."
        f"{' (DEBUG enclave)' if identity.debug else ''}; uid {os.getuid()}"
    )
    try:
        enclave.serve(sock)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
