"""TEE serving protocol: host<->enclave framing, HTTP body layout, enclave config and identity.

Security assumption: everything defined here crosses the untrusted host. Frames between host and
enclave carry only public values (nonces, quotes, public keys, session ids, error codes) and
channel records (AES-256-GCM ciphertext); plaintext requests and tokens exist only inside the
enclave process and the client. Error messages here never contain request or response content.

Host <-> enclave (Unix socket, one connection per operation): frame = u32 length || payload,
payload = u8 kind || body.
    host -> enclave  OP_HEALTH   | -
                     OP_ATTEST   | nonce (32) || context (0..MAX_CONTEXT)
                     OP_GENERATE | session_id (16) || generate body (below)
                     OP_CLOSE    | session_id (16)
    enclave -> host  ST_OK       | body (health: JSON; attest: session_id || enclave_pub || quote)
                     ST_ERR      | JSON {"code", "status", "message"}
                     ST_RECORD   | one channel record (streamed after ST_OK of a generate)
                     ST_DONE     | -   (the stream is complete)

Generate body (HTTP request body, forwarded unchanged): request_index u32 || client_pub (32) ||
records, each u32 length || record. Generate response body: records, each u32 length || record.
Request i of a session uses a fresh client key and channel session id = session_id || u32 i;
indices must strictly increase, so a replayed request cannot be opened twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from privinfer.errors import InputError, PrivinferError
from privinfer.tee.measurement import (
    EnclaveIdentity,
    combine_code,
    combine_measurement,
    hash_code,
    hash_config,
    hash_model,
    package_root,
    signer_id,
)

PROTOCOL = "privinfer-serve-v1"
OP_HEALTH, OP_ATTEST, OP_GENERATE, OP_CLOSE = 1, 2, 3, 4
ST_OK, ST_ERR, ST_RECORD, ST_DONE = 0, 1, 2, 3
SESSION_ID_LEN = 16
MAX_CONTEXT = 256
MAX_FRAME = 4 << 20
RECORD_PAD = 64
_U32 = struct.Struct(">I")

PRODUCT_ID = 1
SVN = 1
# No enclave manifest is signed yet (docs/tee.md): the signer id is this fixed, public label, and
# clients admit any signer while pinning the measurement. Without the signer's signature over the
# identity (measurement.SignerProof) the platform derives no SIGNER sealing key for it.
UNSIGNED_SIGNER = b"privinfer-unsigned-enclave-v1"

# max_sessions bounds sessions whose attested handshake completed (their first request opened);
# sessions still waiting for it are bounded apart (max_pending_sessions) and live pending_ttl_s.
DEFAULT_CONFIG: dict[str, Any] = {
    "protocol": PROTOCOL,
    "max_sessions": 64,
    "session_ttl_s": 300,
    "max_pending_sessions": 16,
    "pending_ttl_s": 30,
    "max_new_tokens": 512,
    "max_request_bytes": 1 << 20,
    "record_pad": RECORD_PAD,
}

# The host's own bound on one client address's sessions (pending or established). Not measured:
# it protects against one client exhausting the enclave's bounds, and the untrusted host can deny
# service anyway (docs/tee.md, "Sessions").
DEFAULT_MAX_SESSIONS_PER_CLIENT = 32

# Error codes the enclave or host returns, with their HTTP status.
STATUS = {
    "bad_request": 400,
    "bad_record": 400,
    "unknown_session": 404,
    "session_expired": 410,
    "session_busy": 409,
    "too_many_sessions": 429,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "enclave_unavailable": 503,
    "overloaded": 503,
    "internal": 500,
}


SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes at most 64 bits; privinfer uses 63


class ProtocolError(PrivinferError):
    """A frame or body is malformed, or the peer closed the connection early."""


class TeeServerError(PrivinferError):
    """The TEE server refused a request; `status` is the HTTP status, `code` the error code."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        self.status, self.code = status, code
        super().__init__(
            f"TEE server refused the request ({status} {code}){': ' + message if message else ''}"
        )


class RequestRefused(TeeServerError, InputError):
    """The enclave refused a request's content (400 bad_request, sent inside the channel)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        self.message = message
        super().__init__(STATUS.get(code, 400), code, message)


# ---------------------------------------------------------------- enclave code, config, identity


def enclave_code_files(root: Path | None = None) -> list[str]:
    """The source files the enclave runs (all of them are measured): package top, models, engines, tee."""
    root = Path(root) if root is not None else package_root()
    files = [f for f in ("__init__.py", "errors.py") if (root / f).is_file()]
    for sub in ("models", "engines", "tee"):
        files += [p.relative_to(root).as_posix() for p in (root / sub).rglob("*.py") if p.is_file()]
    return sorted(files)


def enclave_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The measured enclave config: defaults plus `overrides` (unknown keys are refused)."""
    cfg = dict(DEFAULT_CONFIG)
    for k, v in (overrides or {}).items():
        if k not in DEFAULT_CONFIG or k == "protocol":
            raise ValueError(f"unknown enclave config key {k!r}")
        cfg[k] = v
    return cfg


def identity_from_model_hash(
    model_hash: bytes, config: Mapping[str, Any], *, debug: bool = False
) -> EnclaveIdentity:
    """Enclave identity for the measured code of this package and its runtime (interpreter,
    standard library, distributions, launch; tee/launch.py), `config` and a model hash."""
    from privinfer.tee.launch import runtime_digest

    code = combine_code(hash_code(None, enclave_code_files()), runtime_digest())
    cfg = hash_config(config)
    return EnclaveIdentity(
        measurement=combine_measurement(code, cfg, model_hash),
        signer=signer_id(UNSIGNED_SIGNER),
        product_id=PRODUCT_ID,
        svn=SVN,
        debug=debug,
        code=code,
        config=cfg,
        model=model_hash,
    )


def expected_identity(
    model_file: Path | str, config: Mapping[str, Any] | None = None
) -> EnclaveIdentity:
    """What a client expects, computed from its own copy of the code, runtime, config and model
    file: the same measurement only where the enclave runs the same interpreter and packages."""
    return identity_from_model_hash(hash_model([model_file]), enclave_config(config))


# ---------------------------------------------------------------- framing


def frame(kind: int, body: bytes = b"") -> bytes:
    payload = bytes([kind]) + body
    return _U32.pack(len(payload)) + payload


def _parse_payload(payload: bytes) -> tuple[int, bytes]:
    if not payload:
        raise ProtocolError("empty frame")
    return payload[0], payload[1:]


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProtocolError("connection closed")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[int, bytes]:
    (n,) = _U32.unpack(recv_exact(sock, 4))
    if not 1 <= n <= MAX_FRAME:
        raise ProtocolError("frame length out of range")
    return _parse_payload(recv_exact(sock, n))


async def arecv_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    try:
        (n,) = _U32.unpack(await reader.readexactly(4))
        if not 1 <= n <= MAX_FRAME:
            raise ProtocolError("frame length out of range")
        return _parse_payload(await reader.readexactly(n))
    except (asyncio.IncompleteReadError, ConnectionError):
        raise ProtocolError("connection closed") from None


def error_body(code: str, message: str = "") -> bytes:
    return json.dumps({"code": code, "status": STATUS.get(code, 500), "message": message}).encode()


# ---------------------------------------------------------------- HTTP bodies


def pack_records(records: list[bytes]) -> bytes:
    return b"".join(_U32.pack(len(r)) + r for r in records)


def unpack_records(data: bytes, limit: int = 64) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        if i + 4 > len(data) or len(out) >= limit:
            raise ProtocolError("record framing is wrong")
        (n,) = _U32.unpack_from(data, i)
        if n == 0 or i + 4 + n > len(data):
            raise ProtocolError("record framing is wrong")
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def generate_body(request_index: int, client_pub: bytes, records: list[bytes]) -> bytes:
    return _U32.pack(request_index) + client_pub + pack_records(records)


def parse_generate_body(body: bytes) -> tuple[int, bytes, list[bytes]]:
    if len(body) < 36:
        raise ProtocolError("generate body is truncated")
    (idx,) = _U32.unpack_from(body, 0)
    return idx, body[4:36], unpack_records(body[36:])


class RecordSplitter:
    """Splits a byte stream of u32-length-prefixed records as chunks arrive."""

    def __init__(self, max_record: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_record

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buf += chunk
        while len(self._buf) >= 4:
            (n,) = _U32.unpack_from(self._buf, 0)
            if not 1 <= n <= self._max:
                raise ProtocolError("record framing is wrong")
            if len(self._buf) < 4 + n:
                break
            rec = bytes(self._buf[4 : 4 + n])
            del self._buf[: 4 + n]
            yield rec

    @property
    def pending(self) -> int:
        return len(self._buf)


# ---------------------------------------------------------------- plaintext messages (inside the channel)


def encode_message(obj: Mapping[str, Any], pad: int = RECORD_PAD) -> bytes:
    """JSON, space-padded to a multiple of `pad` bytes so record sizes hide token lengths."""
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % pad)


def decode_message(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError:
        raise ProtocolError("message is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message is not a JSON object")
    return obj


# ---------------------------------------------------------------- default locations


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "privinfer" / "tee"


def default_platform_dir() -> Path:
    return Path(os.environ.get("PRIVINFER_TEE_PLATFORM") or cache_dir() / "platform")


def default_data_dir() -> Path:
    return Path(os.environ.get("PRIVINFER_TEE_DATA") or cache_dir() / "data")


def default_root_cert() -> Path:
    return Path(os.environ.get("PRIVINFER_TEE_ROOT") or cache_dir() / "root_cert.pem")
