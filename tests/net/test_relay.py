"""The delaying relay adds the latency it claims (measured), and TLS links run through it.

Timings here are lower bounds that hold by construction on a loaded machine (the relay holds every
chunk at least its delay; its rate limit releases no byte early), plus upper bounds generous
enough to catch only a hang or a delay in the wrong unit; speed windows belong in benchmarks.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

from privinfer.net.cluster import init_cluster
from privinfer.net.relay import DelayRelay, start_cluster_relays

from .conftest import close_all, connect_all, free_ports, run_parallel


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def _rtts(addr: tuple[str, int], n: int = 8, size: int = 64) -> list[float]:
    with socket.create_connection(addr, timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"p" * size)
            got = 0
            while got < size:
                got += len(s.recv(size - got))
            out.append(time.perf_counter() - t0)
        return out


HANG_S = 1.0  # beyond the configured delay: only a hang or a wrong unit gets here, not load


@pytest.mark.parametrize("delay", [0.02, 0.05])
def test_ping_pong_rtt_is_twice_the_delay(delay: float) -> None:
    srv, t = _echo_server()
    try:
        with DelayRelay(("127.0.0.1", 0), srv.getsockname(), delay) as relay:
            rtts = _rtts(relay.address)
        # each ping is held `delay` there and `delay` back: no ping beats 2 x delay, ever
        assert min(rtts) >= 2 * delay - 1e-4, rtts
        assert statistics.median(rtts) <= 2 * delay + HANG_S, rtts
    finally:
        srv.close()


def test_rate_limit() -> None:
    srv, _ = _echo_server()
    try:
        with DelayRelay(("127.0.0.1", 0), srv.getsockname(), 0.0, rate_bytes_per_s=4e6) as relay:
            with socket.create_connection(relay.address, timeout=5) as s:
                payload = bytes(400_000)
                t0 = time.perf_counter()
                threading.Thread(target=s.sendall, args=(payload,), daemon=True).start()
                got = 0
                while got < len(payload):
                    got += len(s.recv(1 << 16))
                elapsed = time.perf_counter() - t0
        # 400 kB through two 4 MB/s hops (there and back, pipelined): at least 0.1 s, since the
        # relay releases no byte before its rate allows; the upper bound only catches a hang
        assert 0.099 <= elapsed < 10 * HANG_S, elapsed
    finally:
        srv.close()


def test_refuses_non_local_targets() -> None:
    for target in ("192.0.2.1:80", "8.8.8.8:53", "example.com:443"):
        with pytest.raises(ValueError):
            DelayRelay(("127.0.0.1", 0), target, 0.01)
    with pytest.raises(ValueError):
        DelayRelay(("0.0.0.0", 0), ("127.0.0.1", 1), 0.01)


def test_target_down_closes_client() -> None:
    (dead,) = free_ports(1)
    with DelayRelay(("127.0.0.1", 0), ("127.0.0.1", dead), 0.0) as relay:
        with socket.create_connection(relay.address, timeout=5) as s:
            assert s.recv(10) == b""


def test_tls_rounds_through_relays(tmp_path: Path) -> None:
    delay = 0.03
    ports = free_ports(6)
    cluster = init_cluster(
        tmp_path / "c",
        [f"127.0.0.1:{p}" for p in ports[:3]],
        listen=[f"127.0.0.1:{p}" for p in ports[3:]],
    )
    relays = start_cluster_relays(cluster, delay)
    try:
        links = connect_all(cluster, timeout_s=5.0)
        try:
            n_rounds = 4

            def party(i: int) -> float:
                peers = [p for p in range(3) if p != i]
                t0 = time.perf_counter()
                for _ in range(n_rounds):
                    links[i].round({p: b"s" * 100 for p in peers}, peers)
                return time.perf_counter() - t0

            took = run_parallel([lambda i=i: party(i) for i in range(3)])
            # every party sends first, then waits: one round costs one one-way delay. By
            # construction (whatever the threads' start skew under load): i's round k+1 waits for
            # j's round k, which waited for i's round k-1, so n rounds take >= (n - 1) delays
            for r in took:
                assert r >= (n_rounds - 1) * delay - 1e-4, took
                assert r / n_rounds <= delay + HANG_S, took
        finally:
            close_all(links)
    finally:
        for r in relays:
            r.stop()
