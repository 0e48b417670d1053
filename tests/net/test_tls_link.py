"""TLS party links: mutual authentication, session agreement, pairwise keys, exact metering."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from privinfer.net.cluster import ClusterConfig, init_cluster
from privinfer.net.framing import HEADER_SIZE
from privinfer.net.peer import PeerError
from privinfer.net.tls import connect_parties, server_context

from .conftest import (
    close_all,
    connect_all,
    free_ports,
    last_json,
    make_cluster,
    run_parallel,
    start_party,
)


def test_session_and_pairwise_keys(cluster: ClusterConfig) -> None:
    links = connect_all(cluster)
    try:
        assert len({link.session_id for link in links}) == 1
        assert len(links[0].session_id) == 16
        for i in range(3):
            for j in range(3):
                if i != j:
                    k = links[i].pairwise_key(j)
                    assert len(k) == 32 and k == links[j].pairwise_key(i)
        keys = {links[0].pairwise_key(1), links[0].pairwise_key(2), links[1].pairwise_key(2)}
        assert len(keys) == 3
        with pytest.raises(ValueError):
            links[0].pairwise_key(0)
        first = (links[0].session_id, links[0].pairwise_key(1))
    finally:
        close_all(links)
    links = connect_all(cluster)  # a fresh session: new id and new keys
    try:
        assert links[0].session_id != first[0]
        assert links[0].pairwise_key(1) != first[1]
    finally:
        close_all(links)


def test_exact_byte_and_round_counting(cluster: ClusterConfig) -> None:
    links = connect_all(cluster)
    size = {(i, j): 100 * (i + 1) + j for i in range(3) for j in range(3) if i != j}

    def party(i: int) -> dict[int, bytes]:
        peers = [p for p in range(3) if p != i]
        got = links[i].round({j: bytes([i]) * size[i, j] for j in peers}, peers, label="x")
        links[i].round({j: b"" for j in peers}, peers)  # empty payloads, default label
        if i == 0:
            links[0].send(1, b"abc", label="solo")
        if i == 1:
            assert links[1].recv(0) == b"abc"
        return got

    try:
        results = run_parallel([lambda i=i: party(i) for i in range(3)])
        for i in range(3):
            peers = [p for p in range(3) if p != i]
            assert results[i] == {j: bytes([j]) * size[j, i] for j in peers}
            s = links[i].stats
            sent_x = sum(HEADER_SIZE + 1 + size[i, j] for j in peers)
            recv_x = sum(HEADER_SIZE + 1 + size[j, i] for j in peers)
            extra_sent = (HEADER_SIZE + 4 + 3) if i == 0 else 0
            extra_recv = (HEADER_SIZE + 4 + 3) if i == 1 else 0
            assert s.rounds == 2
            assert s.bytes_sent == sent_x + 2 * HEADER_SIZE + extra_sent
            assert s.bytes_received == recv_x + 2 * HEADER_SIZE + extra_recv
            assert s.messages_sent == 4 + (i == 0)
            assert s.messages_received == 4 + (i == 1)
            assert s.by_label["x"] == {
                "bytes_sent": sent_x,
                "bytes_received": recv_x,
                "messages_sent": 2,
                "messages_received": 2,
                "rounds": 1,
            }
            assert s.by_label[""]["bytes_sent"] == 2 * HEADER_SIZE
            assert s.by_label[""]["rounds"] == 1
            wire = links[i].wire_stats()
            assert all(w["bytes_sent"] > 0 for w in wire.values())
    finally:
        close_all(links)


def test_big_frames_both_ways_do_not_deadlock(cluster: ClusterConfig) -> None:
    links = connect_all(cluster)
    big = {i: bytes([i + 1]) * (24 << 20) for i in range(3)}

    def party(i: int) -> bool:
        peers = [p for p in range(3) if p != i]
        got = links[i].round({j: big[i] for j in peers}, peers)
        return all(got[j] == big[j] for j in peers)

    try:
        assert run_parallel([lambda i=i: party(i) for i in range(3)]) == [True] * 3
    finally:
        close_all(links)
    assert not [t for t in threading.enumerate() if t.name.startswith("privinfer-link")]


def test_many_frames_stay_in_order_when_the_socket_fills(cluster: ClusterConfig) -> None:
    """Small frames sent from the caller's thread, sends that would block (handed to the I/O
    thread) and big queued frames interleave while the receiver is stalled: order and bytes hold."""
    links = connect_all(cluster)
    sizes = [(k * 7919) % (60 << 10) for k in range(300)] + [300 << 10, 5, 70 << 10] * 5
    msgs = [bytes([k % 251]) * n for k, n in enumerate(sizes)]
    try:
        with links[1]._channels[0]._lock:  # party 1 cannot read: the sockets fill up
            for m in msgs:
                links[0].send(1, m)
            time.sleep(0.3)
        time.sleep(0.3)  # party 1 is not receiving: its I/O thread reads meanwhile
        assert [links[1].recv(0) for _ in msgs] == msgs
        # both idle: their I/O threads watch the sockets; a late frame is received promptly,
        # whichever thread read it (a missed wake-up would cost a whole 1 s select tick each
        # time). The best of three, so that one scheduling stall on a loaded machine cannot fail
        # it while a missed wake-up (every time) still does.
        waits = []
        for _ in range(3):
            time.sleep(0.3)
            t = threading.Timer(0.1, links[0].send, args=(1, b"late"))
            t.start()
            t0 = time.monotonic()
            assert links[1].recv(0) == b"late"
            waits.append(time.monotonic() - t0)
            t.join()
        assert min(waits) < 0.8, waits
    finally:
        close_all(links)


def test_bad_peer_ids(cluster: ClusterConfig) -> None:
    links = connect_all(cluster)
    try:
        with pytest.raises(ValueError):
            links[0].send(0, b"x")
        with pytest.raises(ValueError):
            links[0].recv(3)
    finally:
        close_all(links)


# ---------------------------------------------------------------- mutual authentication


def _rogue_client(cluster: ClusterConfig, target: int, cert: Path | None, key: Path | None) -> str:
    """Dial `target` as a rogue and report how the connection ended (never succeeds)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cluster.ca_cert)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    p = cluster.party(target)
    deadline = time.monotonic() + 5
    while True:
        try:
            raw = socket.create_connection((p.host, p.port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        with ctx.wrap_socket(raw, server_hostname=f"privinfer-party-{target}") as s:
            data = s.recv(100)  # TLS 1.3: a refused client cert shows up on the first read
            return "eof" if not data else "data"
    except (ssl.SSLError, OSError) as exc:
        return type(exc).__name__


@pytest.mark.parametrize("who", ["no-cert", "foreign-ca", "own-id"])
def test_listener_refuses_bad_client_certificates(tmp_path: Path, who: str) -> None:
    cluster = make_cluster(tmp_path / "c", n=2)
    foreign = make_cluster(tmp_path / "f", n=2)
    cert, key = {
        "no-cert": (None, None),
        "foreign-ca": (foreign.party(1).cert, foreign.party(1).key),  # right name, wrong CA
        "own-id": (cluster.party(0).cert, cluster.party(0).key),  # a real party, not a dialer
    }[who]
    errors: list[PeerError] = []

    def listener() -> None:
        try:
            connect_parties(cluster, 0, 1.0, connect_timeout_s=1.0).close()
        except PeerError as exc:
            errors.append(exc)

    t = threading.Thread(target=listener, daemon=True)
    t.start()
    outcome = _rogue_client(cluster, 0, cert, key)
    t.join(10)
    assert outcome != "data"
    assert len(errors) == 1 and errors[0].peer == 1
    assert "refused 1" in errors[0].reason, errors[0].reason


def test_rogue_first_then_legit_party_still_connects(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path / "c", n=2)
    out: dict[str, object] = {}

    def listener() -> None:
        out["link"] = connect_parties(cluster, 0, 2.0, connect_timeout_s=10.0)

    t = threading.Thread(target=listener, daemon=True)
    t.start()
    assert _rogue_client(cluster, 0, None, None) != "data"
    link1 = connect_parties(cluster, 1, 2.0, connect_timeout_s=10.0)
    t.join(10)
    link0 = out["link"]
    try:
        assert link0.session_id == link1.session_id  # type: ignore[attr-defined]
    finally:
        run_parallel([link0.close, link1.close])  # type: ignore[attr-defined]


def test_dialer_refuses_listener_with_another_partys_certificate(cluster: ClusterConfig) -> None:
    """Party 1 dials party 0's address, but whoever listens there holds party 2's identity."""
    ctx = server_context(cluster, 2)
    p0 = cluster.party(0)
    srv = socket.create_server((p0.host, p0.port))

    def rogue_server() -> None:
        srv.settimeout(5)
        try:
            conn, _ = srv.accept()
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(10)
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=rogue_server, daemon=True)
    t.start()
    try:
        with pytest.raises(PeerError) as info:
            connect_parties(cluster, 1, 2.0, connect_timeout_s=3.0)
        assert info.value.peer == 0
        assert "certificate" in info.value.reason
    finally:
        t.join(5)
        srv.close()


# ---------------------------------------------------------------- three OS processes


def test_three_processes_over_loopback(cluster: ClusterConfig) -> None:
    procs = [
        start_party(cluster.path.parent, i, "--rounds", "3", "--size", "1000") for i in range(3)
    ]
    res = [last_json(p) for p in procs]
    assert all(r.get("error") is None and r["ok"] for r in res), res
    assert len({r["session"] for r in res}) == 1
    for r in res:
        me = r["party"]
        for peer, h in r["pairwise"].items():
            assert res[int(peer)]["pairwise"][str(me)] == h
        s = r["stats"]
        per_msg = HEADER_SIZE + len("test") + 1000
        assert s["rounds"] == 3
        assert s["bytes_sent"] == s["bytes_received"] == 3 * 2 * per_msg
        assert s["messages_sent"] == s["messages_received"] == 6


def _has_ipv6_loopback() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_loopback(tmp_path: Path) -> None:
    cluster = init_cluster(tmp_path / "c", [f"[::1]:{p}" for p in free_ports(2)])
    links = connect_all(cluster)
    try:
        run_parallel([lambda: links[0].send(1, b"v6"), lambda: links[1].recv(0)])
    finally:
        close_all(links)
