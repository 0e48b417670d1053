"""Untrusted HTTP host: starts the enclave process and relays attestation and ciphertext records to it.

Security assumption: nothing here is trusted. The host never opens the platform directory, never
reads the model (it passes the model's path to the enclave, which seals it) and only ever sees
nonces, quotes, public keys and AES-GCM records. It starts the enclave (tee/enclave_link.py) isolated and measured
(tee/launch.py), as its own user unless told `insecure_same_user` (tee/isolation.py), and the
enclave dies with it (net/lifetime.py). It never logs bodies; errors are JSON with a
fixed code and message. A dead enclave answers 503 at once (the process is polled per request).
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from privinfer.errors import InputError, PrivinferError
from privinfer.tee.enclave_link import (
    ApiError,
    EnclaveLink,
    enclave_user,
    start_enclave,
    stop_enclave,
)
from privinfer.tee.isolation import PROVIDERS
from privinfer.tee.protocol import (
    DEFAULT_CONFIG,
    DEFAULT_MAX_SESSIONS_PER_CLIENT,
    OP_ATTEST,
    OP_CLOSE,
    OP_GENERATE,
    OP_HEALTH,
    SESSION_ID_LEN,
    ST_OK,
    ST_RECORD,
    STATUS,
    ProtocolError,
    arecv_frame,
    default_data_dir,
    default_platform_dir,
)

OCTETS = "application/octet-stream"
MAX_JSON = 4096
STREAM_FRAME_TIMEOUT_S = 300.0
# Enclave refusals of a generate after which the session no longer exists there.
ENDS_SESSION = frozenset({"bad_record", "unknown_session", "session_expired", "too_many_sessions"})


def _error(code: str, message: str = "") -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=STATUS.get(code, 500)
    )


async def _read_body(request: Request, limit: int, content_type: str) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != content_type:
        raise ApiError("unsupported_media_type", f"content type must be {content_type}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError("payload_too_large", f"body larger than {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ApiError("payload_too_large", f"body larger than {limit} bytes")
    return bytes(buf)


def _session_id(text: str) -> bytes:
    try:
        sid = bytes.fromhex(text)
    except ValueError:
        sid = b""
    if len(sid) != SESSION_ID_LEN:
        raise ApiError("unknown_session", "session id must be 32 hex digits")
    return sid


class ClientSessions:
    """The host's per-client session count, keyed by the client's address (denial-of-service
    protection only: the host is untrusted and can always refuse service; the enclave enforces its
    own measured bounds). A session is pending from its attestation until its first request is
    accepted, then established; it is forgotten when it is closed, when the enclave ends or
    refuses it, or when its TTL (the enclave config's, on the host's clock) passes."""

    def __init__(self, limit: int, config: dict[str, Any]) -> None:
        self.limit = limit
        self.pending_ttl = min(float(config["pending_ttl_s"]), float(config["session_ttl_s"]))
        self.session_ttl = float(config["session_ttl_s"])
        self._owner: dict[bytes, str] = {}
        self._sessions: dict[str, dict[bytes, tuple[float, float]]] = {}  # (created, expires)
        self._reserved: Counter[str] = Counter()

    def _live(self, client: str) -> dict[bytes, tuple[float, float]]:
        now = time.monotonic()
        mine = self._sessions.get(client, {})
        for sid in [k for k, (_, exp) in mine.items() if exp <= now]:
            del mine[sid]
            self._owner.pop(sid, None)
        return mine

    def reserve(self, client: str) -> None:
        if len(self._live(client)) + self._reserved[client] >= self.limit:
            raise ApiError(
                "too_many_sessions", f"this client already has {self.limit} sessions open"
            )
        self._reserved[client] += 1

    def release(self, client: str, sid: bytes | None) -> None:
        self._reserved[client] -= 1
        if self._reserved[client] <= 0:
            del self._reserved[client]
        if sid is not None:
            now = time.monotonic()
            self._sessions.setdefault(client, {})[sid] = (now, now + self.pending_ttl)
            self._owner[sid] = client

    def established(self, sid: bytes) -> None:
        client = self._owner.get(sid)
        if client is not None and sid in self._sessions.get(client, {}):
            created, _ = self._sessions[client][sid]
            self._sessions[client][sid] = (created, created + self.session_ttl)

    def forget(self, sid: bytes) -> None:
        client = self._owner.pop(sid, None)
        if client is not None:
            self._sessions.get(client, {}).pop(sid, None)
            if not self._sessions.get(client):
                self._sessions.pop(client, None)


def _client_key(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def create_app(
    link: EnclaveLink,
    *,
    max_request_bytes: int | None = None,
    config: dict[str, Any] | None = None,
    max_sessions_per_client: int = DEFAULT_MAX_SESSIONS_PER_CLIENT,
) -> FastAPI:
    """The host's HTTP API (no docs pages: nothing to browse). `config` is the enclave's
    measured config (for its TTLs); `max_sessions_per_client` bounds the sessions, pending or
    established, that one client address holds at a time."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    limit = int(max_request_bytes or cfg["max_request_bytes"])
    metrics: Counter[str] = Counter()
    per_client = ClientSessions(max_sessions_per_client, cfg)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        metrics[f'errors_total{{code="{exc.code}"}}'] += 1
        return _error(exc.code, exc.message)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        metrics['errors_total{code="internal"}'] += 1
        return _error("internal", "internal error")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if not link.alive():
            return _error("enclave_unavailable", "the enclave process is not running")
        info = json.loads(await link.call(OP_HEALTH, b"", timeout=5.0))
        return JSONResponse({"status": "ok", "enclave": info})

    @app.get("/metrics")
    async def metrics_text() -> PlainTextResponse:
        lines = [f"privinfer_tee_{k} {v}" for k, v in sorted(metrics.items())]
        return PlainTextResponse("\n".join(lines) + "\n")

    @app.post("/v1/attest")
    async def attest(request: Request) -> JSONResponse:
        metrics['requests_total{endpoint="attest"}'] += 1
        body = await _read_body(request, MAX_JSON, "application/json")
        try:
            obj = json.loads(body)
            nonce = bytes.fromhex(obj["nonce"])
            context = bytes.fromhex(obj.get("context", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ApiError("bad_request", "body must be JSON {nonce: hex, context: hex}") from None
        if len(nonce) != 32:
            raise ApiError("bad_request", "nonce must be 32 bytes (64 hex digits)")
        who = _client_key(request)
        per_client.reserve(who)
        sid = None
        try:
            out = await link.call(OP_ATTEST, nonce + context)
            sid = out[:SESSION_ID_LEN]
        finally:
            per_client.release(who, sid)
        pub, quote = out[SESSION_ID_LEN : SESSION_ID_LEN + 32], out[48:]
        return JSONResponse(
            {
                "session_id": sid.hex(),
                "enclave_pub": pub.hex(),
                "quote": base64.b64encode(quote).decode(),
                "evidence_type": "privinfer-software-v1",
            }
        )

    @app.delete("/v1/sessions/{sid}")
    async def close(sid: str) -> Response:
        s = _session_id(sid)
        try:
            await link.call(OP_CLOSE, s)
        finally:
            per_client.forget(s)
        return Response(status_code=204)

    @app.post("/v1/sessions/{sid}/generate")
    async def generate(sid: str, request: Request) -> Response:
        metrics['requests_total{endpoint="generate"}'] += 1
        s = _session_id(sid)
        body = await _read_body(request, limit, OCTETS)
        reader, writer = await link.open(OP_GENERATE, s + body)
        try:
            kind, _ = await link.first(reader, 60.0)
            if kind != ST_OK:
                raise ApiError("internal")
        except ApiError as exc:
            writer.close()
            if exc.code in ENDS_SESSION:
                per_client.forget(s)
            raise
        except BaseException:
            writer.close()
            raise
        per_client.established(s)

        async def relay() -> AsyncIterator[bytes]:
            try:
                while True:
                    try:
                        k, rec = await asyncio.wait_for(arecv_frame(reader), STREAM_FRAME_TIMEOUT_S)
                    except (ProtocolError, TimeoutError):
                        return  # enclave gone: the client sees a stream without END
                    link.record(b"<", bytes([k]) + rec)
                    if k != ST_RECORD:
                        return
                    yield len(rec).to_bytes(4, "big") + rec
            finally:
                writer.close()

        return StreamingResponse(relay(), media_type=OCTETS, headers={"Cache-Control": "no-store"})

    return app


class Stopped(Exception):
    """SIGTERM or SIGINT reached `privinfer tee serve`: stop the enclave, clean up, exit 0."""


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise Stopped(signum)


def serve(
    model: str = "smollm2-135m",
    *,
    platform_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 8470,
    threads: int | None = None,
    config: dict[str, Any] | None = None,
    debug_enclave: bool = False,
    trace: Path | str | None = None,
    access_log: bool = True,
    max_sessions_per_client: int = DEFAULT_MAX_SESSIONS_PER_CLIENT,
    platform: str = "software",
    user: str | None = None,
    insecure_same_user: bool = False,
) -> int:
    """`privinfer tee serve`: start the enclave, then the HTTP host until SIGTERM or SIGINT,
    which stop the enclave and remove its socket folder (exit 0)."""
    import uvicorn

    from privinfer.models.registry import resolve

    if platform not in PROVIDERS:
        raise InputError(f"--platform must be one of {', '.join(PROVIDERS)} (got {platform!r})")
    _fmt, source = resolve(model)
    pdir = Path(platform_dir) if platform_dir else default_platform_dir()
    ddir = Path(data_dir) if data_dir else default_data_dir()
    if not (pdir / "ak_key.pem").exists():
        raise PrivinferError(f"no software platform at {pdir}: run `privinfer tee init-platform`")
    run_as = enclave_user(insecure_same_user, user)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"privinfer tee serve: WARNING: listening on {host}, not localhost", file=sys.stderr)
    old = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    link: EnclaveLink | None = None
    sock_dir = None
    trace_f = None
    try:
        link, info, sock_dir = start_enclave(
            source,
            pdir,
            ddir,
            threads=threads,
            config=config,
            debug_enclave=debug_enclave,
            run_as=run_as,
            quotes=PROVIDERS[platform],
        )
        trace_f = open(trace, "ab") if trace else None  # noqa: SIM115 - closed below
        link.trace = trace_f
        app = create_app(
            link,
            max_request_bytes=(config or {}).get("max_request_bytes"),
            config=config,
            max_sessions_per_client=max_sessions_per_client,
        )
        who = "as this user (INSECURE: same user)" if run_as is None else f"as uid {run_as[0]}"
        print(
            f"privinfer tee serve: http://{host}:{port} enclave measurement "
            f"{info['measurement']}{' DEBUG' if info['debug'] else ''}; enclave runs {who}",
            file=sys.stderr,
            flush=True,
        )
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=access_log,
            timeout_graceful_shutdown=5,
        )
    except Stopped:
        pass
    finally:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        if link is not None:
            stop_enclave(link, sock_dir)
        if trace_f is not None:
            trace_f.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 0
