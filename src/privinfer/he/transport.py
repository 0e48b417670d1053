"""Length-prefixed messages over mutually authenticated TLS 1.3 between HE client and server.

Security assumption: identities come from a 2-party privinfer cluster CA (`net.cluster`): the
server presents "privinfer-party-0", clients present "privinfer-party-1"; whoever holds the CA
key is trusted to mint them. TLS gives confidentiality and integrity against the network; the
HE protocol itself protects the client's data from the (semi-honest) server. Messages carry a
4-byte kind, a JSON header (no plaintext data, no keys) and a binary payload (ciphertexts, public
keys); sizes are bounded before anything is allocated.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

from privinfer.errors import InputError, PrivinferError
from privinfer.net.cluster import ClusterConfig, init_cluster, load_cluster, party_name
from privinfer.net.peer import PeerError
from privinfer.net.tls import client_context, server_context

_HEAD = struct.Struct("!4sIQ")
MAX_META = 1 << 20
MAX_PAYLOAD = 8 << 30
SERVER_ID, CLIENT_ID = 0, 1


class TransportError(PrivinferError):
    """The peer went away, misbehaved or failed authentication."""


class PeerRefused(PeerError, InputError):
    """The peer ended the session with ERR, refusing the request; `reason` is the peer's
    one-sentence explanation. An InputError, as a refusal of this side's request is."""

    def __init__(self, peer: int, reason: str, message: str | None = None) -> None:
        super().__init__(
            peer, reason, f"HE peer reported: {reason}" if message is None else message
        )


class ServerBusy(PeerRefused):
    """The HE server already runs its maximum number of sessions; the client may retry later."""

    def __init__(self) -> None:
        super().__init__(
            SERVER_ID, "busy", "The HE server is busy with other sessions; try again later."
        )


BUSY_CODE = "busy"
STOP_CODE = "client-stopped"


class PeerStopped(PeerRefused):
    """The client ended the session with ERR (it refused a request, e.g. a refresh whose masked
    values left the window); raised on the server, which then only logs the outcome. `reason`
    is one of a fixed set (the client's string never reaches the log)."""

    REASONS = ("SecurityError", "InputError")

    def __init__(self, reason: Any) -> None:
        reason = reason if reason in self.REASONS else "other"
        super().__init__(CLIENT_ID, reason, f"The HE client stopped the session ({reason}).")


def default_cert_dir() -> Path:
    env = os.environ.get("PRIVINFER_HE_CERTS")
    return Path(env) if env else Path.home() / ".config" / "privinfer" / "he"


def ensure_identities(folder: Path, port: int) -> ClusterConfig:
    """Load the 2-party identities in `folder`, creating them (CA + server + client) if absent."""
    if (folder / "cluster.toml").exists():
        return load_cluster(folder)
    return init_cluster(folder, [f"127.0.0.1:{port}", "127.0.0.1:1"])


class Connection:
    """One authenticated TLS connection to party `peer` (SERVER_ID or CLIENT_ID); counts bytes
    each way."""

    def __init__(self, sock: ssl.SSLSocket, peer: int) -> None:
        self.sock = sock
        self.peer = peer
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, kind: str, meta: dict[str, Any] | None = None, payload: bytes = b"") -> None:
        blob = json.dumps(meta or {}).encode()
        head = _HEAD.pack(kind.encode().ljust(4)[:4], len(blob), len(payload))
        try:
            self.sock.sendall(head + blob)
            if payload:
                self.sock.sendall(payload)
        except OSError as exc:
            raise TransportError(f"HE peer connection failed ({type(exc).__name__}).") from None
        self.bytes_sent += len(head) + len(blob) + len(payload)

    def _read(self, n: int) -> bytes:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], min(n - got, 1 << 24))
            except OSError as exc:
                raise TransportError(f"HE peer connection failed ({type(exc).__name__}).") from None
            if not k:
                raise TransportError("The HE peer closed the connection.")
            got += k
        return bytes(buf)

    def recv(self, expect: str | None = None) -> tuple[str, dict[str, Any], bytes]:
        kind_b, n_meta, n_payload = _HEAD.unpack(self._read(_HEAD.size))
        if n_meta > MAX_META or n_payload > MAX_PAYLOAD:
            raise TransportError("HE message too large; connection dropped.")
        try:
            kind = kind_b.decode().strip()
            meta = json.loads(self._read(n_meta).decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise TransportError("Malformed HE message.") from None
        payload = self._read(n_payload) if n_payload else b""
        self.bytes_received += _HEAD.size + n_meta + n_payload
        if kind == "ERR" and expect != "ERR":
            if isinstance(meta, dict) and meta.get("code") == BUSY_CODE:
                raise ServerBusy()
            if isinstance(meta, dict) and meta.get("code") == STOP_CODE:
                raise PeerStopped(meta.get("reason"))
            why = meta.get("message", "error") if isinstance(meta, dict) else "error"
            raise PeerRefused(self.peer, str(why))
        if expect is not None and kind != expect:
            raise TransportError(f"HE protocol error: expected {expect}, got {kind}.")
        if not isinstance(meta, dict):
            raise TransportError("Malformed HE message.")
        return kind, meta, payload

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def listen(cluster: ClusterConfig, host: str, port: int) -> tuple[socket.socket, ssl.SSLContext]:
    ctx = server_context(cluster, SERVER_ID)
    srv = socket.create_server((host, port), reuse_port=False)
    return srv, ctx


def accept(srv: socket.socket, ctx: ssl.SSLContext, timeout_s: float = 30.0) -> Connection:
    """Accept one client; TLS handshake with a required client certificate from the CA."""
    raw, _ = srv.accept()
    return handshake(raw, ctx, timeout_s)


def handshake(raw: socket.socket, ctx: ssl.SSLContext, timeout_s: float = 30.0) -> Connection:
    """Server side TLS handshake on an accepted socket; the peer must present a client identity."""
    raw.settimeout(timeout_s)
    try:
        tls = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise TransportError(
            f"TLS handshake with an HE client failed ({type(exc).__name__})."
        ) from None
    cert = tls.getpeercert() or {}
    sans = {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}
    if party_name(CLIENT_ID) not in sans:  # a CA-signed certificate, but not a client's
        tls.close()
        raise TransportError("An HE client presented a certificate that is not a client's.")
    tls.settimeout(600.0)
    return Connection(tls, CLIENT_ID)


def connect(cluster: ClusterConfig, host: str, port: int, timeout_s: float = 30.0) -> Connection:
    """Dial the HE server; verifies it is party 0 of this CA and presents the client identity."""
    ctx = client_context(cluster, CLIENT_ID)
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
        tls = ctx.wrap_socket(raw, server_hostname=party_name(SERVER_ID))
    except (ssl.SSLError, OSError) as exc:
        raise TransportError(
            f"Could not reach the HE server at {host}:{port} ({type(exc).__name__})."
        ) from None
    tls.settimeout(600.0)
    return Connection(tls, SERVER_ID)
