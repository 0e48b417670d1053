"""Faults: killed, hung or disconnected peers raise PeerError naming the peer, never a hang."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

from privinfer.net.cluster import ClusterConfig
from privinfer.net.peer import PeerError
from privinfer.net.tls import connect_parties

from .conftest import close_all, connect_all, last_json, make_cluster, run_parallel, start_party

LONG_TIMEOUT_S = 30.0  # a timeout far off, so that "not after a timeout" is the error's reason
HANG_S = 10.0  # above an expected duration: only a hang, never a busy machine, gets this far


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            if not line:
                break
            if json.loads(line).get("ready"):
                return
    proc.kill()
    raise AssertionError("party never became ready")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_dead_or_hung_process_is_named(cluster: ClusterConfig, sig: signal.Signals) -> None:
    """3 OS processes; party 2 is killed (EOF at once) or frozen (no FIN: the timeout fires).

    The waiters start waiting when they finish their rounds, but party 2 is signalled only once
    this process has read its `ready`, which a loaded machine can delay by seconds. So a kill gets
    a long timeout (EOF, not the timeout, must end the wait: the reason says which), and a freeze
    a short one whose lower bound holds by construction (the timeout counts from the recv's start)
    and whose upper bound only catches a hang."""
    timeout = 30.0 if sig == signal.SIGKILL else 3.0
    d = cluster.path.parent
    victim = start_party(d, 2, "--rounds", "2", "--hang", "--timeout", str(timeout))
    waiters = [
        start_party(d, i, "--rounds", "2", "--wait-for", "2", "--timeout", str(timeout))
        for i in range(2)
    ]
    try:
        _wait_ready(victim)
        victim.send_signal(sig)
        res = [last_json(p, timeout=60) for p in waiters]
    finally:
        victim.kill()
        victim.wait(10)
        for p in waiters:
            p.kill()
    for r in res:
        assert r["ok"] and r["stats"]["rounds"] == 2
        assert r["error"]["peer"] == 2, r
        if sig == signal.SIGKILL:
            assert "closed" in r["error"]["reason"] or "connection" in r["error"]["reason"]
            assert r["wait_s"] < timeout / 2, r  # the EOF, well before any timeout
        else:
            assert "timed out" in r["error"]["reason"]
            assert timeout - 0.1 <= r["wait_s"] < timeout + 20, r


def test_dropped_connection(cluster: ClusterConfig) -> None:
    links = connect_all(cluster, timeout_s=LONG_TIMEOUT_S)
    try:
        links[0]._channels[1]._sock.shutdown(socket.SHUT_RDWR)  # the wire breaks
        for me, peer in ((1, 0), (0, 1)):
            t0 = time.monotonic()
            with pytest.raises(PeerError) as info:
                links[me].recv(peer)
            # the break itself ends the recv, not its timeout (which is far off)
            assert info.value.peer == peer and "timed out" not in info.value.reason, info.value
            assert time.monotonic() - t0 < LONG_TIMEOUT_S / 2
        with pytest.raises(PeerError) as info:
            links[1].send(0, b"x")
        assert info.value.peer == 0
        links[2].send(1, b"still")
        assert links[1].recv(2) == b"still"
    finally:
        close_all(links)


def test_graceful_close_is_reported(cluster: ClusterConfig) -> None:
    links = connect_all(cluster, timeout_s=5.0)
    try:
        links[0].send(1, b"last words")
        links[0].close()
        assert links[1].recv(0) == b"last words"  # data sent before CLOSE is delivered
        with pytest.raises(PeerError, match="closed the link") as info:
            links[1].recv(0)
        assert info.value.peer == 0
        with pytest.raises(PeerError):
            links[0].send(1, b"x")
    finally:
        close_all(links)


def test_timeout_when_peer_is_silent(cluster: ClusterConfig) -> None:
    links = connect_all(cluster, timeout_s=0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(PeerError, match="timed out") as info:
            links[0].recv(2)
        # the timeout counts from the recv's start, so 0.5 s is a floor by construction; the
        # ceiling only catches a recv that ignores its timeout
        assert info.value.peer == 2 and 0.45 < time.monotonic() - t0 < 0.5 + HANG_S
        links[2].send(0, b"late")  # a timeout does not break the link
        assert links[0].recv(2, timeout_s=2.0) == b"late"
    finally:
        close_all(links)


def test_heartbeat_keeps_slow_peer_alive(cluster: ClusterConfig) -> None:
    # a compute twice the recv timeout, heartbeats every 1/15 of it: without heartbeats the recv
    # times out; with them it survives up to ~1.4 s of its I/O thread not being scheduled
    links = connect_all(cluster, timeout_s=1.5, heartbeat_s=0.1)
    try:
        t = threading.Timer(3.0, links[0].send, args=(1, b"after a long compute"))
        t.start()
        assert links[1].recv(0) == b"after a long compute"
        t.join()
        assert links[1].stats.messages_received == 1  # pings are not counted
    finally:
        close_all(links)


def test_nobody_listening(tmp_path) -> None:
    cluster = make_cluster(tmp_path / "c")
    t0 = time.monotonic()
    with pytest.raises(PeerError, match="could not connect") as info:
        connect_parties(cluster, 2, 1.0, connect_timeout_s=1.0)
    assert info.value.peer == 0 and time.monotonic() - t0 < 1.0 + HANG_S  # gives up, no hang


def test_nobody_dials(tmp_path) -> None:
    cluster = make_cluster(tmp_path / "c", n=2)
    with pytest.raises(PeerError, match="no authenticated connection") as info:
        connect_parties(cluster, 0, 1.0, connect_timeout_s=0.7)
    assert info.value.peer == 1


def test_peer_dies_during_handshake(tmp_path) -> None:
    """Party 1 completes TLS, then vanishes before HELLO: party 0 names it, promptly."""
    cluster = make_cluster(tmp_path / "c", n=2)
    from privinfer.net import tls

    def dial_and_drop() -> None:
        ctx = tls.client_context(cluster, 1)
        sock, *_ = tls._dial(cluster, ctx, 0, time.monotonic() + 5)
        sock.close()

    t = threading.Thread(target=dial_and_drop, daemon=True)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(PeerError) as info:
        connect_parties(cluster, 0, 1.0, connect_timeout_s=LONG_TIMEOUT_S)
    t.join(5)
    # promptly: the dropped connection ends the wait, long before the connect timeout
    assert info.value.peer == 1 and time.monotonic() - t0 < LONG_TIMEOUT_S / 2


def test_no_threads_left_behind(cluster: ClusterConfig) -> None:
    links = connect_all(cluster, timeout_s=1.0)
    links[0]._channels[1]._sock.shutdown(socket.SHUT_RDWR)
    close_all(links)
    deadline = time.monotonic() + 10  # the threads exit on their own schedule: poll
    while [t for t in threading.enumerate() if t.name.startswith("privinfer-link")]:
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.02)


def test_eager_heartbeats_do_not_disturb_the_handshake(cluster: ClusterConfig) -> None:
    for _ in range(3):
        links = connect_all(cluster, timeout_s=2.0, heartbeat_s=0.001)
        try:
            time.sleep(0.05)
            got = run_parallel(
                [
                    lambda lk=lk, i=i: lk.round({(i + 1) % 3: b"x"}, [(i - 1) % 3])
                    for i, lk in enumerate(links)
                ]
            )
            assert got == [{2: b"x"}, {0: b"x"}, {1: b"x"}]
            assert all(link.stats.bytes_received == 41 for link in links)
        finally:
            close_all(links)
