"""TLS 1.3 mutually authenticated party links with fresh session keys; trusts the cluster CA.

Security assumption: the cluster CA (see net/cluster.py) is trusted and each party's key is known
only to that party; a peer is whoever presents a CA-signed certificate naming
"privinfer-party-<id>" for the id we expect. Parties are semi-honest: the link gives integrity,
confidentiality and session binding against the network, not protection from a malicious peer's
protocol messages. Pairwise keys come from an X25519 exchange inside TLS, fresh per session.

Layout: each pair is connected once (the higher id dials the lower id's listen address). Each
peer connection is a `TlsChannel` (net/tlschannel.py): an `ssl.SSLObject` over memory BIOs used
under one lock, small frames sent and received from the caller's thread, big or blocked sends
streamed by a per-peer I/O thread, so sends never block on a peer that is itself sending (no
round deadlock with big frames). `recv` times out after `timeout_s` without any bytes from that
peer; a dead peer (EOF/reset) is reported at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import ssl
import struct
import time
from types import TracebackType

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privinfer.net.cluster import ClusterConfig, ClusterConfigError, party_name
from privinfer.net.framing import (
    DEFAULT_MAX_CONTROL,
    DEFAULT_MAX_FRAME,
    FrameParser,
    FrameType,
)
from privinfer.net.peer import LinkStats, PeerError
from privinfer.net.tlschannel import TlsChannel as _Channel
from privinfer.net.tlschannel import tls_reason as _tls_reason
from privinfer.net.tlscontext import bio_handshake, cert_party_id, client_context, server_context

__all__ = ["TlsPeerLink", "connect_parties", "server_context", "client_context"]

log = logging.getLogger(__name__)

_HELLO = struct.Struct("!HH16s32s32s")  # party id, n parties, cluster id, nonce, X25519 public


# --------------------------------------------------------------------------- the link


def _count(stats: LinkStats, label: str, key: str, n: int) -> None:
    d = stats.by_label.setdefault(
        label,
        {
            "bytes_sent": 0,
            "bytes_received": 0,
            "messages_sent": 0,
            "messages_received": 0,
            "rounds": 0,
        },
    )
    d[key] += n


class TlsPeerLink:
    """`PeerLink` over TLS 1.3 sockets; build it with `connect_parties`.

    `stats` counts DATA frames only, each as header (40 B) + label + payload; handshake, ping and
    close frames and TLS/TCP overhead are not in it (see `wire_stats()` for TLS bytes on the wire).
    """

    def __init__(
        self,
        party_id: int,
        n_parties: int,
        channels: dict[int, _Channel],
        session_id: bytes,
        pairwise: dict[int, bytes],
        timeout_s: float,
        close_linger_s: float,
    ) -> None:
        self.party_id = party_id
        self.n_parties = n_parties
        self.stats = LinkStats()
        self.session_id = session_id
        self.timeout_s = timeout_s
        self._channels = channels
        self._pairwise = pairwise
        self._close_linger_s = close_linger_s
        self._closed = False

    def _chan(self, peer: int) -> _Channel:
        ch = self._channels.get(peer)
        if ch is None:
            raise ValueError(f"party {self.party_id} has no link to party {peer}")
        if self._closed:
            raise PeerError(peer, "link is closed")
        return ch

    @property
    def peers(self) -> list[int]:
        return sorted(self._channels)

    def pairwise_key(self, peer: int) -> bytes:
        """32 bytes shared with `peer` only, fresh for this session (for PRF seeds)."""
        self._chan(peer)
        return self._pairwise[peer]

    def send(self, peer: int, payload: bytes, label: str = "") -> None:
        """Send one DATA frame to `peer` without blocking (small frames go out at once; the rest, or
        anything that would block, is streamed by the I/O thread).

        Pass `bytes` to avoid a copy; other buffers are copied so the caller may reuse them.
        """
        ch = self._chan(peer)
        mv = memoryview(payload if isinstance(payload, bytes) else bytes(payload))
        n = ch.send_frame(FrameType.DATA, label, mv)
        s = self.stats
        s.bytes_sent += n
        s.messages_sent += 1
        _count(s, label, "bytes_sent", n)
        _count(s, label, "messages_sent", 1)

    def recv(self, peer: int, timeout_s: float | None = None) -> bytes:
        """Next DATA payload from `peer`; PeerError on timeout (no bytes for `timeout_s`), drop or bad frame."""
        ch = self._chan(peer)
        fr = ch.recv_frame(self.timeout_s if timeout_s is None else timeout_s)
        if fr.type != FrameType.DATA:
            raise PeerError(peer, f"unexpected {fr.type.name} frame")
        s = self.stats
        s.bytes_received += fr.size
        s.messages_received += 1
        _count(s, fr.label, "bytes_received", fr.size)
        _count(s, fr.label, "messages_received", 1)
        return fr.payload

    def round(
        self, outgoing: dict[int, bytes], expect_from: list[int], label: str = ""
    ) -> dict[int, bytes]:
        """Send all of `outgoing`, then receive one payload from each of `expect_from`; one round."""
        for peer in sorted(outgoing):
            self._chan(peer)
        for peer in expect_from:
            self._chan(peer)
        for peer in sorted(outgoing):
            self.send(peer, outgoing[peer], label)
        got = {peer: self.recv(peer) for peer in expect_from}
        self.stats.rounds += 1
        _count(self.stats, label, "rounds", 1)
        return got

    def wire_stats(self) -> dict[int, dict[str, int]]:
        """TLS bytes actually written/read per peer socket, handshakes included."""
        return {
            p: {"bytes_sent": ch.wire_sent, "bytes_received": ch.wire_received}
            for p, ch in sorted(self._channels.items())
        }

    def close(self) -> None:
        """Send CLOSE to every peer, flush, wait up to `close_linger_s` for theirs, join threads."""
        if self._closed:
            return
        self._closed = True
        for ch in self._channels.values():
            ch.begin_close(self._close_linger_s)
        for ch in self._channels.values():
            ch.finish_close()

    def __enter__(self) -> TlsPeerLink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- setup


def _dial(
    cluster: ClusterConfig, ctx: ssl.SSLContext, peer: int, deadline: float
) -> tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """Connect and run TLS to `peer`, retrying with backoff on refused/closed connections (the
    peer or a relay in front of it may not be up yet); certificate problems fail at once."""
    target = cluster.party(peer)
    delay = 0.05
    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerError(
                peer,
                f"could not connect to {target.host}:{target.port} before the deadline ({last})",
            )
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((target.host, target.port), timeout=min(remaining, 5.0))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            sslobj = ctx.wrap_bio(inc, out, server_side=False, server_hostname=party_name(peer))
            bio_handshake(sock, sslobj, inc, out, deadline)
            if cert_party_id(sslobj) != peer:
                raise PeerError(peer, "certificate does not name the expected party")
            return sock, sslobj, inc, out
        except (PeerError, ssl.SSLError) as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, PeerError):
                raise
            raise PeerError(peer, _tls_reason(exc)) from None
        except OSError as exc:  # refused, reset, closed mid-handshake: try again
            if sock is not None:
                sock.close()
            last = _tls_reason(exc)
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)


def _accept(
    listener: socket.socket,
    ctx: ssl.SSLContext,
    expected: set[int],
    deadline: float,
    handshake_s: float,
) -> dict[int, tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]]:
    got: dict[int, tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]] = {}
    refused: list[str] = []
    try:
        while len(got) < len(expected):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = min(expected - set(got))
                why = f"; refused {len(refused)}: {'; '.join(refused[:3])}" if refused else ""
                raise PeerError(missing, f"no authenticated connection before the deadline{why}")
            listener.settimeout(min(remaining, 1.0))
            try:
                sock, _addr = listener.accept()
            except TimeoutError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            sslobj = ctx.wrap_bio(inc, out, server_side=True)
            try:
                bio_handshake(sock, sslobj, inc, out, min(deadline, time.monotonic() + handshake_s))
            except (OSError, ssl.SSLError) as exc:
                refused.append(_tls_reason(exc))
                log.warning("refused a connection: %s", refused[-1])
                sock.close()
                continue
            pid = cert_party_id(sslobj)
            if pid is None or pid not in expected or pid in got:
                refused.append(
                    "certificate names no party"
                    if pid is None
                    else f"certificate names party {pid}, not an expected dialer"
                )
                log.warning("refused a connection: %s", refused[-1])
                sock.close()
                continue
            got[pid] = (sock, sslobj, inc, out)
    except BaseException:
        for s, *_ in got.values():
            s.close()
        raise
    return got


def connect_parties(
    cluster: ClusterConfig,
    party_id: int,
    timeout_s: float = 30.0,
    *,
    connect_timeout_s: float = 60.0,
    max_frame_bytes: int = DEFAULT_MAX_FRAME,
    max_control_bytes: int = DEFAULT_MAX_CONTROL,
    heartbeat_s: float | None = None,
    close_linger_s: float = 2.0,
) -> TlsPeerLink:
    """Connect `party_id` to every other party of `cluster` and agree a fresh session.

    Party j dials every party i < j at its host:port (retrying with backoff until
    `connect_timeout_s`) and accepts every party k > j on its listen address. Each connection is
    TLS 1.3 with mutual certificate checks against the cluster CA and the expected party name.
    Then all parties exchange nonces and X25519 keys; the session id is
    SHA-256("privinfer/session/v1" | cluster id | n | nonce_0..nonce_{n-1})[:16], confirmed by
    every peer, and `pairwise_key(p)` = HKDF-SHA256(X25519 secret, salt=session id).
    `timeout_s` bounds each recv's silence; `heartbeat_s` (off by default) sends PING frames
    when idle, so long local computation does not look like a dead peer.
    """
    n = cluster.n_parties
    if not 0 <= party_id < n:
        raise ClusterConfigError(f"party id {party_id} is not in cluster {cluster.path}.")
    me = cluster.party(party_id)
    sctx = server_context(cluster, party_id)
    cctx = client_context(cluster, party_id)
    deadline = time.monotonic() + connect_timeout_s
    higher = set(range(party_id + 1, n))
    listener: socket.socket | None = None
    conns: dict[int, tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]] = {}
    channels: dict[int, _Channel] = {}
    try:
        if higher:
            family = socket.AF_INET6 if ":" in me.listen_host else socket.AF_INET
            listener = socket.create_server(
                (me.listen_host, me.listen_port), family=family, backlog=max(8, n)
            )
        for peer in range(party_id):
            conns[peer] = _dial(cluster, cctx, peer, deadline)
        if listener is not None:
            conns.update(_accept(listener, sctx, higher, deadline, handshake_s=10.0))
            listener.close()
            listener = None
        for peer, (sock, sslobj, inc, out) in sorted(conns.items()):
            parser = FrameParser(max_frame=max_frame_bytes, max_control=max_control_bytes)
            channels[peer] = _Channel(peer, sock, sslobj, inc, out, parser, heartbeat_s)
        conns.clear()
        for ch in channels.values():
            ch.start()
        session_id, pairwise = _session_handshake(cluster, party_id, channels, deadline)
    except BaseException:
        if listener is not None:
            listener.close()
        for sock, *_ in conns.values():
            sock.close()
        for ch in channels.values():
            ch.abort()
        raise
    return TlsPeerLink(party_id, n, channels, session_id, pairwise, timeout_s, close_linger_s)


def _session_handshake(
    cluster: ClusterConfig, party_id: int, channels: dict[int, _Channel], deadline: float
) -> tuple[bytes, dict[int, bytes]]:
    n = cluster.n_parties
    nonce = secrets.token_bytes(32)
    xkey = X25519PrivateKey.generate()
    my_pub = xkey.public_key().public_bytes_raw()
    hello = _HELLO.pack(party_id, n, cluster.cluster_id, nonce, my_pub)
    for ch in channels.values():
        ch.send_frame(FrameType.HELLO, "", memoryview(hello))
    nonces = {party_id: nonce}
    pubs: dict[int, bytes] = {}
    for peer, ch in sorted(channels.items()):
        fr = ch.recv_frame(max(0.5, deadline - time.monotonic()))
        if fr.type != FrameType.HELLO or len(fr.payload) != _HELLO.size:
            raise PeerError(peer, "handshake: malformed HELLO")
        pid, pn, pcid, pnonce, ppub = _HELLO.unpack(fr.payload)
        if pid != peer:
            raise PeerError(peer, f"handshake: HELLO claims party {pid}")
        if pn != n or not hmac.compare_digest(pcid, cluster.cluster_id):
            raise PeerError(peer, "handshake: peer uses a different cluster configuration")
        nonces[peer] = pnonce
        pubs[peer] = ppub
    h = hashlib.sha256(b"privinfer/session/v1" + cluster.cluster_id + n.to_bytes(2, "big"))
    for i in range(n):
        h.update(nonces[i])
    session_id = h.digest()[:16]
    for ch in channels.values():
        ch.parser.session_id = session_id  # before our CONFIRM: peers send DATA only after it
        ch.send_session = session_id
    for ch in channels.values():
        ch.send_frame(FrameType.CONFIRM, "", memoryview(session_id))
    for peer, ch in sorted(channels.items()):
        fr = ch.recv_frame(max(0.5, deadline - time.monotonic()))
        if fr.type != FrameType.CONFIRM or not hmac.compare_digest(fr.payload, session_id):
            raise PeerError(peer, "handshake: session id mismatch")
        ch.handshake_done = True
    pairwise: dict[int, bytes] = {}
    for peer in channels:
        try:
            shared = xkey.exchange(X25519PublicKey.from_public_bytes(pubs[peer]))
        except ValueError:
            raise PeerError(peer, "handshake: bad X25519 public key") from None
        lo, hi = sorted((party_id, peer))
        pub_lo, pub_hi = (my_pub, pubs[peer]) if party_id < peer else (pubs[peer], my_pub)
        info = b"privinfer/pairwise/v1" + struct.pack("!HH", lo, hi) + pub_lo + pub_hi
        pairwise[peer] = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=session_id, info=info
        ).derive(shared)
    return session_id, pairwise
