"""One TLS-protected connection to one peer: frames in and out over an `ssl.SSLObject`.

Security assumption: the caller (net/tls.py) hands over a socket whose TLS 1.3 handshake already
authenticated the expected peer; this module adds no cryptography, it only moves frames through
that TLS object and the strict `FrameParser` (session binding, sequence numbers, size limits).
Any bad frame, TLS error or unexpected EOF ends the connection and is reported as a PeerError.

Threads: the owner (the protocol thread) and one daemon I/O thread per channel share the socket
and the TLS object; every use of the TLS object, its BIOs and the buffers below happens under
`_lock` (an SSLObject must never be used by two threads at once). Fast path: a small frame with
nothing queued ahead of it is encrypted and sent (non-blocking) by the owner itself, and an owner
waiting in `recv_frame` reads and decrypts the socket itself, so a round needs no thread hand-off.
The I/O thread sends whatever would block (big frames, partial sends), sends heartbeats, runs the
close handshake, and reads only while the owner is not receiving (so a dead peer or a CLOSE is
noticed while the owner computes). Writes never wait on reads, so rounds with big frames in every
direction cannot deadlock.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections import deque

from privinfer.net.framing import (
    ZERO_SESSION,
    Frame,
    FrameError,
    FrameParser,
    FrameType,
    encode_header,
)
from privinfer.net.peer import PeerError

__all__ = ["TlsChannel", "tls_reason"]

_CHUNK = 1 << 20  # plaintext handed to TLS at a time / max socket read
_CT_HIGH = 4 << 20  # ciphertext buffered ahead of the socket
_INLINE_MAX = 64 << 10  # frames up to this size may be sent from the owner's thread
_IDLE_S = 0.05  # the I/O thread reads once the owner has not been receiving for this long
_TICK = 0.2


def tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or type(exc).__name__}"
    if isinstance(exc, TimeoutError):
        return "timed out in the TLS handshake"
    if isinstance(exc, OSError):
        return f"connection error: {exc.strerror or str(exc) or type(exc).__name__}"
    return type(exc).__name__


def _drain_sock(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while s.recv(4096):
            pass


class TlsChannel:
    """One authenticated connection to one peer (see the module docstring for the threading)."""

    def __init__(
        self,
        peer: int,
        sock: socket.socket,
        sslobj: ssl.SSLObject,
        inc: ssl.MemoryBIO,
        out: ssl.MemoryBIO,
        parser: FrameParser,
        heartbeat_s: float | None,
    ) -> None:
        self.peer = peer
        self._sock = sock
        self._ssl = sslobj
        self._inc = inc
        self._out = out
        self.parser = parser
        self.send_session = ZERO_SESSION
        self.handshake_done = False  # set once the peer's CONFIRM arrived: pings are safe then
        self._heartbeat_s = heartbeat_s
        self._lock = threading.Lock()  # guards TLS object, BIOs, buffers, queues and flags
        self._outq: deque[memoryview] = deque()  # plaintext the I/O thread still has to encrypt
        self._ct = bytearray()  # ciphertext not yet on the socket (from self._ct_off)
        self._ct_off = 0
        self._frames: deque[Frame] = deque()  # received, not yet taken by recv_frame
        self._rbuf = bytearray(_CHUNK)
        self._pbuf = bytearray(_CHUNK)
        self._send_seq = 0
        self._wake_r, self._wake_w = socket.socketpair()  # owner -> I/O thread
        self._note_r, self._note_w = socket.socketpair()  # I/O thread -> owner waiting in recv
        for s in (self._wake_r, self._wake_w, self._note_r, self._note_w):
            s.setblocking(False)
        self._error: str | None = None
        self._stop = False  # hard failure: the I/O thread exits and shuts the socket down
        self._closing = False
        self._close_deadline = 0.0
        self._peer_closed = False
        self._eof = False
        self._in_recv = False
        self._owner_waiting = False
        self._last_recv = time.monotonic()
        self.last_rx = time.monotonic()
        self._last_tx = time.monotonic()
        self.wire_sent = 0
        self.wire_received = 0
        self._thread = threading.Thread(
            target=self._run, name=f"privinfer-link-{peer}", daemon=True
        )

    # -- called from the owner's thread
    def start(self) -> None:
        self._sock.setblocking(False)
        self._thread.start()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _header(self, ftype: FrameType, label: str, plen: int) -> bytes:
        session = (
            self.send_session if ftype not in (FrameType.HELLO, FrameType.CONFIRM) else ZERO_SESSION
        )
        hdr = encode_header(ftype, session, self._send_seq, label, plen)
        self._send_seq += 1
        self._last_tx = time.monotonic()
        return hdr

    def _enqueue(self, ftype: FrameType, label: str, payload: memoryview) -> int:
        hdr = self._header(ftype, label, len(payload))
        self._outq.append(memoryview(hdr))
        if len(payload):
            self._outq.append(payload)
        return len(hdr) + len(payload)

    def send_frame(self, ftype: FrameType, label: str, payload: memoryview) -> int:
        with self._lock:
            if self._error is not None:
                raise PeerError(self.peer, self._error)
            if self._closing:
                raise PeerError(self.peer, "link is closed")
            if len(payload) > _INLINE_MAX or self._outq or self._ct_off < len(self._ct):
                n = self._enqueue(ftype, label, payload)
            else:  # nothing queued ahead: encrypt and send it from this thread
                hdr = self._header(ftype, label, len(payload))
                n = len(hdr) + len(payload)
                try:
                    self._ssl.write(hdr + payload if len(payload) else hdr)
                except ssl.SSLError as exc:
                    self._fail_locked(tls_reason(exc), stop=True)
                    self._wake()
                    raise PeerError(self.peer, self._error or "link failed") from None
                data = self._out.read()
                try:
                    sent = self._sock.send(data)
                except OSError:  # would block, or broken: the I/O thread retries and reports
                    sent = 0
                self.wire_sent += sent
                if sent == len(data):
                    return n
                self._ct = bytearray(memoryview(data)[sent:])
                self._ct_off = 0
        self._wake()
        return n

    def recv_frame(self, timeout_s: float) -> Frame:
        start = time.monotonic()
        self._in_recv = True
        try:
            while True:
                with self._lock:
                    self._owner_waiting = False
                    if not self._frames and self._error is None:
                        wake = self._read_locked()
                        if wake:
                            self._wake()
                    if self._frames:
                        return self._frames.popleft()
                    if self._error is not None:  # sticky: every later recv fails the same way
                        raise PeerError(self.peer, self._error)
                    remaining = timeout_s - (time.monotonic() - max(self.last_rx, start))
                    if remaining <= 0:
                        raise PeerError(self.peer, f"timed out (no data for {timeout_s:g} s)")
                    self._owner_waiting = True
                r, _, _ = select.select([self._sock, self._note_r], [], [], min(remaining, 1.0))
                if self._note_r in r:
                    _drain_sock(self._note_r)
        finally:
            self._in_recv = False
            self._last_recv = time.monotonic()

    def begin_close(self, linger_s: float) -> None:
        with self._lock:
            if self._closing:
                return
            healthy = self._error is None and self._thread.is_alive()
            if healthy:  # tell the peer, flush, and wait (up to linger_s) for its EOF
                self._enqueue(FrameType.CLOSE, "", memoryview(b""))
            self._closing = True
            self._close_deadline = time.monotonic() + (linger_s if healthy else 0.0)
        self._wake()

    def finish_close(self) -> None:
        if self._thread.is_alive():
            self._thread.join(max(0.0, self._close_deadline - time.monotonic()) + 1.0)
        for s in (self._sock, self._wake_r, self._wake_w, self._note_r, self._note_w):
            with contextlib.suppress(OSError):
                s.close()

    def abort(self) -> None:
        """Drop the connection now (used when setup fails)."""
        with self._lock:
            self._closing = True
            self._close_deadline = 0.0
        self._wake()
        self.finish_close()

    # -- either thread, with self._lock held
    def _fail_locked(self, reason: str, stop: bool) -> None:
        if self._error is None and not (stop and self._closing):
            self._error = reason
        self._stop = self._stop or stop

    def _read_locked(self) -> bool:
        """Take what the socket holds now (non-blocking) and parse it; errors end the link.

        Returns True when the I/O thread must be woken (ciphertext to send, stop or close)."""
        try:
            while True:
                try:
                    n = self._sock.recv_into(self._rbuf)
                except (BlockingIOError, InterruptedError):
                    break
                if not n:
                    self._eof = True
                    if self._closing or self._peer_closed:
                        break
                    where = " mid-frame" if self.parser.mid_frame else ""
                    raise ConnectionError(f"connection closed by peer{where}")
                self.wire_received += n
                self.last_rx = time.monotonic()
                self._inc.write(memoryview(self._rbuf)[:n])
                self._drain_tls()
                extra = self._out.read()
                if extra:
                    self._ct += extra
                if n < len(self._rbuf):
                    break
        except FrameError as exc:
            self._fail_locked(f"{exc}; link dropped", stop=True)
        except (OSError, ssl.SSLError) as exc:
            self._fail_locked(tls_reason(exc), stop=True)
        return self._stop or self._peer_closed or self._ct_off < len(self._ct)

    def _drain_tls(self) -> None:
        while True:
            try:
                n = self._ssl.read(_CHUNK, self._pbuf)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                raise ConnectionError("peer ended TLS") from None
            if not n:
                return
            if self._peer_closed:
                continue  # anything after CLOSE is ignored
            for fr in self.parser.feed(memoryview(self._pbuf)[:n]):
                if fr.type == FrameType.PING:
                    continue
                if fr.type == FrameType.CLOSE:
                    self._peer_closed = True
                    self._fail_locked("peer closed the link", stop=False)
                    continue
                self._frames.append(fr)

    def _pump_locked(self) -> None:
        """Encrypt queued plaintext (one chunk) and send what the socket takes without blocking."""
        if self._outq and len(self._ct) - self._ct_off < _CT_HIGH:
            piece = self._outq[0]
            if len(piece) > _CHUNK:
                chunk = piece[:_CHUNK]
                self._outq[0] = piece[_CHUNK:]
            else:
                chunk = piece
                self._outq.popleft()
            self._ssl.write(chunk)
            self._ct += self._out.read()
        if self._ct_off < len(self._ct):
            try:
                n = self._sock.send(memoryview(self._ct)[self._ct_off : self._ct_off + _CHUNK])
            except (BlockingIOError, InterruptedError):
                n = 0
            self._ct_off += n
            self.wire_sent += n
        if self._ct_off == len(self._ct):
            self._ct.clear()
            self._ct_off = 0
        elif self._ct_off * 2 >= len(self._ct):
            del self._ct[: self._ct_off]
            self._ct_off = 0

    # -- the I/O thread
    def _note_owner(self) -> None:
        if self._owner_waiting:
            with contextlib.suppress(OSError):
                self._note_w.send(b"\0")

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - everything becomes a PeerError for the owner
            with self._lock:
                self._fail_locked(tls_reason(exc), stop=True)
        finally:
            if self._error is not None or not self._closing:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
            self._note_owner()

    def _loop(self) -> None:
        fin_sent = False
        while True:
            now = time.monotonic()
            with self._lock:
                if self._stop:
                    return
                closing = self._closing
                ending = closing or self._peer_closed
                if (
                    self._heartbeat_s
                    and not closing
                    and self.handshake_done
                    and now - self._last_tx >= self._heartbeat_s
                ):
                    self._enqueue(FrameType.PING, "", memoryview(b""))
            while True:  # encrypt and send in steps, so the owner is not locked out for long
                with self._lock:
                    before = (len(self._outq), self._ct_off, len(self._ct))
                    self._pump_locked()
                    if (len(self._outq), self._ct_off, len(self._ct)) == before:
                        break
                    if not self._outq and self._ct_off == len(self._ct):
                        break
            with self._lock:
                want_w = self._ct_off < len(self._ct) or bool(self._outq)
                reading = not self._eof and (
                    ending or (not self._in_recv and now - self._last_recv >= _IDLE_S)
                )
                if ending and not want_w and not fin_sent:  # flush, FIN, wait for the peer's FIN
                    with contextlib.suppress(OSError):
                        self._sock.shutdown(socket.SHUT_WR)
                    fin_sent = True
                if (fin_sent and self._eof) or (closing and now >= self._close_deadline):
                    return
            rlist: list[socket.socket] = [self._wake_r]
            if reading:
                rlist.append(self._sock)
            wlist = [self._sock] if self._ct_off < len(self._ct) else []
            r, _, _ = select.select(rlist, wlist, [], _TICK)
            if self._wake_r in r:
                _drain_sock(self._wake_r)
            if self._sock in r:
                with self._lock:
                    self._read_locked()
                    got = bool(self._frames) or self._error is not None
                if got:
                    self._note_owner()
