"""Frames: round trip, and rejection of malformed, oversized, out-of-order and stale frames."""

from __future__ import annotations

import logging
import struct
import time

import pytest

from privinfer.net.cluster import ClusterConfig
from privinfer.net.framing import (
    HEADER_SIZE,
    MAGIC,
    ZERO_SESSION,
    FrameError,
    FrameParser,
    FrameType,
    encode_frame,
    frame_size,
)
from privinfer.net.peer import PeerError
from privinfer.net.tls import TlsPeerLink

from .conftest import close_all, connect_all, run_parallel

SID = bytes(range(16))
OLD = bytes(range(1, 17))


def handshaken(**kw) -> FrameParser:
    p = FrameParser(session_id=SID, **kw)
    assert p.feed(encode_frame(FrameType.HELLO, ZERO_SESSION, 0, b"h"))[0].type == FrameType.HELLO
    assert p.feed(encode_frame(FrameType.CONFIRM, ZERO_SESSION, 1, SID))[0].payload == SID
    return p


def test_header_layout() -> None:
    f = encode_frame(FrameType.DATA, SID, 7, b"payload", label="mul")
    assert HEADER_SIZE == 40 and len(f) == 40 + 3 + 7 == frame_size("mul", 7)
    magic, ver, typ, llen, res, sid, seq, plen = struct.unpack("!4sBBBB16sQQ", f[:40])
    assert (magic, ver, typ, llen, res, sid, seq, plen) == (MAGIC, 1, 3, 3, 0, SID, 7, 7)
    assert f[40:43] == b"mul" and f[43:] == b"payload"


def test_round_trip_byte_by_byte() -> None:
    p = handshaken()
    stream = b"".join(
        encode_frame(FrameType.DATA, SID, 2 + k, bytes([k]) * k, label=f"l{k}") for k in range(5)
    )
    frames = []
    for i in range(len(stream)):
        frames += p.feed(stream[i : i + 1])
    assert [(f.seq, f.label, f.payload) for f in frames] == [
        (2 + k, f"l{k}", bytes([k]) * k) for k in range(5)
    ]
    assert all(f.size == frame_size(f.label, len(f.payload)) for f in frames)
    assert not p.mid_frame


def _corrupt(offset: int, value: int) -> bytes:
    f = bytearray(encode_frame(FrameType.DATA, SID, 2, b"x"))
    f[offset] = value
    return bytes(f)


@pytest.mark.parametrize(
    "frame, message",
    [
        (_corrupt(0, ord("X")), "bad magic"),
        (_corrupt(4, 9), "unsupported frame version 9"),
        (_corrupt(5, 99), "unknown type 99"),
        (_corrupt(7, 1), "reserved"),
        (
            encode_frame(FrameType.DATA, SID, 3, b"x"),
            "out-of-order frame \\(expected seq 2, got 3\\)",
        ),
        (encode_frame(FrameType.DATA, SID, 1, b"x"), "out-of-order"),
        (encode_frame(FrameType.DATA, OLD, 2, b"x"), "another session"),
        (encode_frame(FrameType.HELLO, ZERO_SESSION, 2, b"x"), "unexpected HELLO"),
        (encode_frame(FrameType.DATA, SID, 2, b"x", label="é")[:40] + b"\xff\xfex", "UTF-8"),
    ],
    ids=[
        "magic",
        "version",
        "type",
        "reserved",
        "seq-skip",
        "seq-replay",
        "old-session",
        "late-hello",
        "label-utf8",
    ],
)
def test_rejects(frame: bytes, message: str) -> None:
    p = handshaken()
    with pytest.raises(FrameError, match=message):
        p.feed(frame)


def test_oversized_rejected_from_header_alone() -> None:
    p = handshaken(max_frame=1000, max_control=16)
    huge = struct.pack("!4sBBBB16sQQ", MAGIC, 1, int(FrameType.DATA), 0, 0, SID, 2, 1 << 62)
    with pytest.raises(FrameError, match="oversized DATA frame"):
        p.feed(huge)  # no payload follows and nothing is allocated
    p = handshaken(max_frame=1000, max_control=16)
    assert p.feed(encode_frame(FrameType.DATA, SID, 2, bytes(1000)))[0].size == 1040
    with pytest.raises(FrameError, match="oversized CLOSE frame"):
        p.feed(encode_frame(FrameType.CLOSE, SID, 3, bytes(17)))
    with pytest.raises(FrameError, match="oversized HELLO"):
        FrameParser(max_control=16).feed(encode_frame(FrameType.HELLO, ZERO_SESSION, 0, bytes(17)))


def test_handshake_rules() -> None:
    with pytest.raises(FrameError, match="before the session handshake"):
        FrameParser(session_id=SID).feed(encode_frame(FrameType.DATA, SID, 0, b""))
    with pytest.raises(FrameError, match="carries a session id"):
        FrameParser().feed(encode_frame(FrameType.HELLO, SID, 0, b""))
    p = FrameParser()
    p.feed(encode_frame(FrameType.HELLO, ZERO_SESSION, 0, b""))
    p.feed(encode_frame(FrameType.CONFIRM, ZERO_SESSION, 1, b""))
    with pytest.raises(FrameError, match="before the session was agreed"):
        p.feed(encode_frame(FrameType.DATA, SID, 2, b""))


def test_label_too_long() -> None:
    with pytest.raises(ValueError):
        encode_frame(FrameType.DATA, SID, 0, b"", label="x" * 256)


# ---------------------------------------------------------------- on a live TLS link


LONG_TIMEOUT_S = 30.0


def _inject(link: TlsPeerLink, peer: int, raw: bytes) -> None:
    """Write raw bytes into the TLS stream to `peer`, bypassing the framer (test-only hook)."""
    ch = link._channels[peer]
    with ch._lock:
        ch._outq.append(memoryview(raw))
    ch._wake()


def _expect_dropped(victim: TlsPeerLink, peer: int, match: str) -> float:
    t0 = time.monotonic()
    with pytest.raises(PeerError, match=match) as info:
        victim.recv(peer)
    assert info.value.peer == peer
    with pytest.raises(PeerError):  # sticky
        victim.recv(peer)
    return time.monotonic() - t0


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"GET / HTTP/1.1\r\n" + bytes(40), "bad magic"),
        (None, "out-of-order"),  # a replay of the previous frame
        (encode_frame(FrameType.DATA, ZERO_SESSION, 3, b"x"), "another session"),
    ],
    ids=["garbage", "replay", "zero-session"],
)
def test_live_link_drops_bad_frames(cluster: ClusterConfig, raw: bytes | None, match: str) -> None:
    # A long recv timeout: "at once, not after a timeout" is then the error's reason (and a wait
    # far below the timeout), not a race between a 2 s bound and a busy machine's scheduler.
    links = connect_all(cluster, timeout_s=LONG_TIMEOUT_S)
    try:
        links[0].send(1, b"first")
        assert links[1].recv(0) == b"first"
        if raw is None:  # replay frame seq 2 (the first DATA frame) verbatim
            raw = encode_frame(FrameType.DATA, links[0].session_id, 2, b"first")
        _inject(links[0], 1, raw)
        assert _expect_dropped(links[1], 0, match) < LONG_TIMEOUT_S / 2
        # party 1 dropped the connection; party 0 learns at once, not after a timeout
        t0 = time.monotonic()
        with pytest.raises(PeerError) as info:
            links[0].recv(1)
        assert info.value.peer == 1 and "timed out" not in info.value.reason, info.value
        assert time.monotonic() - t0 < LONG_TIMEOUT_S / 2
        # the unaffected pair still works
        links[1].send(2, b"ok")
        assert links[2].recv(1) == b"ok"
    finally:
        close_all(links)


def test_frame_replayed_from_old_session(cluster: ClusterConfig) -> None:
    old = connect_all(cluster, timeout_s=3.0)
    old_sid = old[0].session_id
    close_all(old)
    links = connect_all(cluster, timeout_s=3.0)
    try:
        assert links[0].session_id != old_sid
        # a frame exactly as party 0 sent it in the old session, at the right seq for the new one
        _inject(links[0], 2, encode_frame(FrameType.DATA, old_sid, 2, b"stale"))
        _expect_dropped(links[2], 0, "another session")
    finally:
        close_all(links)


def test_live_oversized_frame(cluster: ClusterConfig) -> None:
    links = connect_all(cluster, timeout_s=3.0, max_frame_bytes=4096)
    try:
        links[0].send(1, bytes(4096 - 1), label="a")  # label + payload == limit: fine
        assert len(links[1].recv(0)) == 4095
        links[0].send(1, bytes(5000))
        _expect_dropped(links[1], 0, "oversized DATA frame")
    finally:
        close_all(links)


def test_stats_unchanged_by_rejected_frames(cluster: ClusterConfig) -> None:
    links = connect_all(cluster, timeout_s=3.0)
    try:
        run_parallel([lambda: links[0].send(1, b"12345"), lambda: links[1].recv(0)])
        _inject(links[0], 1, b"\x00" * 64)
        _expect_dropped(links[1], 0, "bad magic")
        assert links[1].stats.bytes_received == HEADER_SIZE + 5
        assert links[1].stats.messages_received == 1
    finally:
        close_all(links)


CANARY = b"CANARY-7f3a-secret-share-bytes"


def test_no_payload_bytes_in_errors_or_logs(cluster: ClusterConfig, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for raw in (CANARY * 4, encode_frame(FrameType.DATA, OLD, 2, CANARY, label="l")):
        try:
            handshaken(max_frame=8).feed(raw)
        except FrameError as exc:
            seen.append(str(exc))
    links = connect_all(cluster, timeout_s=2.0, max_frame_bytes=16)
    try:
        links[0].send(1, CANARY)  # oversized for party 1
        with pytest.raises(PeerError) as info:
            links[1].recv(0)
        seen.append(str(info.value))
        _inject(links[0], 2, CANARY * 3)
        with pytest.raises(PeerError) as info:
            links[2].recv(0)
        seen.append(str(info.value))
    finally:
        close_all(links)
    assert len(seen) == 4
    text = "\n".join(seen) + caplog.text
    assert CANARY.decode() not in text and "CANARY" not in text
