"""Three party processes in three network namespaces (optionally tbf-shaped); clean teardown."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from privinfer.net.cluster import init_cluster
from privinfer.net.netns import NetnsCluster, NetnsError, netns_available

from .conftest import last_json, party_cmd

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not netns_available(), reason="needs root and a working `ip netns`"),
]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _run_parties(net: NetnsCluster, tmp: Path, *args: str) -> list[dict]:
    cluster = init_cluster(tmp, [f"{a}:29400" for a in net.addresses])
    procs = [
        net.popen(
            i,
            party_cmd(cluster.path.parent, i, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    try:
        return [last_json(p, timeout=40) for p in procs]
    finally:
        for p in procs:
            p.kill()


def test_three_parties_in_three_namespaces(tmp_path: Path) -> None:
    with NetnsCluster(3) as net:
        names = set(net.names) | {net.hub}
        assert names <= _namespaces()
        res = _run_parties(net, tmp_path / "c", "--rounds", "3", "--size", "2000")
    assert not names & _namespaces()  # all torn down
    assert all(r.get("error") is None and r["ok"] for r in res), res
    assert len({r["session"] for r in res}) == 1
    for r in res:
        assert r["stats"]["rounds"] == 3
        assert r["stats"]["bytes_sent"] == 3 * 2 * (40 + 4 + 2000)


def test_tbf_shaping_limits_throughput(tmp_path: Path) -> None:
    # each party sends 2 x 400 kB and receives 2 x 400 kB over a 16 Mbit/s (2 MB/s) veth
    with NetnsCluster(3, rate="16mbit") as net:
        res = _run_parties(net, tmp_path / "c", "--rounds", "1", "--size", "400000")
    assert all(r.get("error") is None and r["ok"] for r in res), res
    # By construction, at any load: the party that started its round first receives all 800 kB
    # after that start, through its own 2 MB/s ingress tbf (4 kB burst), so it takes >= ~0.4 s;
    # the others may have had bytes queued before their clocks started, so only the max is bound
    # (a per-party 0.3 s floor could fail when load staggers the parties' starts).
    assert max(r["rounds_s"] for r in res) >= 0.35, res
    assert all(r["rounds_s"] < 30 for r in res), res  # a hang, not a slow machine
    print("tbf 16mbit, 800 kB each way per party:", [round(r["rounds_s"], 3) for r in res])


def test_namespaces_are_isolated_from_host_loopback() -> None:
    host = socket.create_server(("127.0.0.1", 0))
    port = host.getsockname()[1]
    probe = (
        "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)"
    )
    try:
        with NetnsCluster(2) as net:
            lst = net.popen(
                1,
                [
                    "python3",
                    "-c",
                    "import socket,time; s=socket.create_server(('0.0.0.0', 29999)); print(1, flush=True); s.accept()",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert lst.stdout is not None and lst.stdout.readline().strip() == "1"
                ok = net.run(
                    0, ["python3", "-c", probe, net.addresses[1], "29999"], capture_output=True
                )
                assert ok.returncode == 0  # namespace to namespace over the bridge
            finally:
                lst.kill()
                lst.wait(5)
            bad = net.run(0, ["python3", "-c", probe, "127.0.0.1", str(port)], capture_output=True)
            assert bad.returncode != 0  # the host's loopback is not reachable from inside
    finally:
        host.close()


def test_failed_build_cleans_up() -> None:
    before = _namespaces()
    net = NetnsCluster(2, rate="not-a-rate")
    with pytest.raises(NetnsError), net:
        pass
    assert _namespaces() == before
