"""Session-bound length-prefixed frames + strict parser; relies on TLS below, adds no crypto.

Security assumption: frames travel inside a mutually authenticated TLS connection, so framing adds
no cryptography of its own; it rejects (never repairs) anything malformed, oversized, out of
sequence or bound to another session, so a confused or stale peer cannot inject data into a
protocol run. Errors name the problem, never payload bytes.

Frame layout (network byte order), 40-byte header then label then payload:

    offset size field
    0      4    magic       b"PVNF"
    4      1    version     1
    5      1    type        HELLO=1 CONFIRM=2 DATA=3 CLOSE=4 PING=5
    6      1    label_len   0..255 (UTF-8 label follows the header)
    7      1    reserved    must be 0
    8      16   session id  all zero for HELLO/CONFIRM, the agreed session id otherwise
    24     8    seq         per direction, starts at 0, +1 per frame of any type
    32     8    payload_len bytes of payload after the label
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "FrameError",
    "FrameType",
    "Frame",
    "FrameParser",
    "HEADER_SIZE",
    "MAGIC",
    "ZERO_SESSION",
    "VERSION",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_CONTROL",
    "encode_header",
    "encode_frame",
    "frame_size",
]

MAGIC = b"PVNF"
VERSION = 1
_HEADER = struct.Struct("!4sBBBB16sQQ")
HEADER_SIZE = _HEADER.size  # 40
ZERO_SESSION = bytes(16)
DEFAULT_MAX_FRAME = 1 << 30  # DATA frames: big matmul shares
DEFAULT_MAX_CONTROL = 64 << 10  # HELLO / CONFIRM / CLOSE / PING
MAX_LABEL = 255


class FrameType(IntEnum):
    HELLO = 1
    CONFIRM = 2
    DATA = 3
    CLOSE = 4
    PING = 5


_HANDSHAKE = (FrameType.HELLO, FrameType.CONFIRM)


class FrameError(Exception):
    """A frame failed validation; the message describes the header problem only."""


@dataclass(frozen=True)
class Frame:
    type: FrameType
    seq: int
    label: str
    payload: bytes
    size: int  # header + label + payload, as counted on the link


def _label_bytes(label: str) -> bytes:
    b = label.encode("utf-8")
    if len(b) > MAX_LABEL:
        raise ValueError(f"frame label longer than {MAX_LABEL} bytes")
    return b


def frame_size(label: str, payload_len: int) -> int:
    """Bytes a frame occupies on the link (header + label + payload)."""
    return HEADER_SIZE + len(_label_bytes(label)) + payload_len


def encode_header(
    ftype: FrameType, session_id: bytes, seq: int, label: str, payload_len: int
) -> bytes:
    """Header plus label bytes; the payload is sent right after, unchanged."""
    if len(session_id) != 16:
        raise ValueError("session id must be 16 bytes")
    lb = _label_bytes(label)
    return _HEADER.pack(MAGIC, VERSION, int(ftype), len(lb), 0, session_id, seq, payload_len) + lb


def encode_frame(
    ftype: FrameType, session_id: bytes, seq: int, payload: bytes, label: str = ""
) -> bytes:
    """A whole frame as one bytes object (tests and small control frames)."""
    return encode_header(ftype, session_id, seq, label, len(payload)) + bytes(payload)


class FrameParser:
    """Incremental, validating decoder for one direction of one link.

    `feed()` takes raw bytes as they arrive and returns complete frames; it raises FrameError on
    the first bad header, after which the link must be dropped. Validation happens on the header,
    before any payload is buffered, so an oversized length never allocates.
    """

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_control: int = DEFAULT_MAX_CONTROL,
        session_id: bytes | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.max_control = max_control
        self.session_id = session_id  # set once the handshake has agreed it
        self.expected_seq = 0
        self._hdr = bytearray()
        self._cur: tuple[FrameType, int, int, int] | None = None  # type, seq, label_len, total
        self._body: bytearray | None = None
        self._filled = 0

    @property
    def mid_frame(self) -> bool:
        return bool(self._hdr) or self._body is not None

    def _check_header(self, hdr: bytes) -> tuple[FrameType, int, int, int]:
        magic, version, ftype, label_len, reserved, session, seq, plen = _HEADER.unpack(hdr)
        if magic != MAGIC:
            raise FrameError("malformed frame (bad magic)")
        if version != VERSION:
            raise FrameError(f"unsupported frame version {version}")
        try:
            ft = FrameType(ftype)
        except ValueError:
            raise FrameError(f"malformed frame (unknown type {ftype})") from None
        if reserved != 0:
            raise FrameError("malformed frame (reserved byte set)")
        if seq != self.expected_seq:
            raise FrameError(f"out-of-order frame (expected seq {self.expected_seq}, got {seq})")
        if ft in _HANDSHAKE:
            if seq >= len(_HANDSHAKE) or ft != _HANDSHAKE[seq]:
                raise FrameError(f"unexpected {ft.name} frame at seq {seq}")
            if session != ZERO_SESSION:
                raise FrameError(f"{ft.name} frame carries a session id")
        else:
            if seq < len(_HANDSHAKE):
                raise FrameError(f"{ft.name} frame before the session handshake")
            if self.session_id is None:
                raise FrameError(f"{ft.name} frame before the session was agreed")
            if session != self.session_id:
                raise FrameError("frame from another session")
        limit = self.max_frame if ft == FrameType.DATA else self.max_control
        if plen + label_len > limit:
            raise FrameError(f"oversized {ft.name} frame ({plen} bytes > limit {limit})")
        return ft, seq, label_len, label_len + plen

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        out: list[Frame] = []
        mv = memoryview(data)
        while True:
            if self._body is None:
                if not mv:
                    break
                need = HEADER_SIZE - len(self._hdr)
                self._hdr += mv[:need]
                mv = mv[need:]
                if len(self._hdr) < HEADER_SIZE:
                    break
                self._cur = self._check_header(bytes(self._hdr))
                self.expected_seq += 1
                self._hdr.clear()
                self._body = bytearray(self._cur[3])
                self._filled = 0
            body = self._body
            take = min(len(body) - self._filled, len(mv))
            if take:
                body[self._filled : self._filled + take] = mv[:take]
                self._filled += take
                mv = mv[take:]
            if self._filled < len(body):
                break
            assert self._cur is not None
            ft, seq, label_len, total = self._cur
            try:
                label = bytes(body[:label_len]).decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError("malformed frame (label is not UTF-8)") from None
            payload = bytes(body) if label_len == 0 else bytes(memoryview(body)[label_len:])
            out.append(Frame(ft, seq, label, payload, HEADER_SIZE + total))
            self._body = None
            self._cur = None
        return out
