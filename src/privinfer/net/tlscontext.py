"""TLS 1.3 contexts for the cluster's party identities, and the memory-BIO handshake used by
the party links (`net.tls`) and the HE transport.

Security assumption: the cluster CA (net/cluster.py) is trusted and each party's key is known
only to that party; contexts require TLS 1.3 and a CA-signed certificate from the peer, and a
peer's identity is the single party id its certificate names (SAN and CN agree).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

from privinfer.net.cluster import ClusterConfig, ClusterConfigError, party_id_from_name, party_name

__all__ = ["server_context", "client_context", "cert_party_id", "bio_handshake"]


def _base_context(cluster: ClusterConfig, party_id: int, server: bool) -> ssl.SSLContext:
    me = cluster.party(party_id)
    for f, what in ((me.cert, "certificate"), (me.key, "key")):
        if not f.is_file():
            raise ClusterConfigError(f"party {party_id} {what} file {f} does not exist.")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(me.cert, me.key)
        ctx.load_verify_locations(cafile=str(cluster.ca_cert))
    except (ssl.SSLError, OSError) as exc:
        raise ClusterConfigError(
            f"party {party_id} TLS identity or CA could not be loaded ({type(exc).__name__})."
        ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_context(cluster: ClusterConfig, party_id: int) -> ssl.SSLContext:
    """TLS 1.3 server context for `party_id`: requires a client certificate from the cluster CA."""
    ctx = _base_context(cluster, party_id, server=True)
    ctx.num_tickets = 0
    return ctx


def client_context(cluster: ClusterConfig, party_id: int) -> ssl.SSLContext:
    """TLS 1.3 client context for `party_id`: verifies the server's name against the expected party."""
    ctx = _base_context(cluster, party_id, server=False)
    ctx.check_hostname = True
    return ctx


def cert_party_id(sslobj: ssl.SSLObject) -> int | None:
    """The single party id a verified peer certificate names (SAN DNS and CN agree), else None."""
    cert = sslobj.getpeercert()
    if not cert:
        return None
    sans = {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}
    cns = {v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"}
    ids = {party_id_from_name(n) for n in sans}
    if len(ids) != 1 or None in ids:
        return None
    (pid,) = ids
    if cns and cns != {party_name(pid)}:  # type: ignore[arg-type]
        return None
    return pid


def _flush_bio(sock: socket.socket, out: ssl.MemoryBIO) -> None:
    data = out.read()
    if data:
        sock.sendall(data)


def bio_handshake(
    sock: socket.socket,
    sslobj: ssl.SSLObject,
    inc: ssl.MemoryBIO,
    out: ssl.MemoryBIO,
    deadline: float,
) -> None:
    while True:
        try:
            sslobj.do_handshake()
            _flush_bio(sock, out)
            return
        except ssl.SSLWantReadError:
            _flush_bio(sock, out)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("TLS handshake timed out") from None
            sock.settimeout(remaining)
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed during the TLS handshake") from None
            inc.write(data)
        except ssl.SSLError:
            with contextlib.suppress(OSError):
                _flush_bio(sock, out)  # deliver our alert so the peer learns why
            raise
