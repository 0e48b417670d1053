"""Emulated lan/wan networks: measured RTT/bandwidth, TLS party rounds, teardown, refusal."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from privinfer.bench import netem
from privinfer.bench.netem import NetemUnavailableError, emulated_network, emulated_pair
from privinfer.errors import InputError, PrivinferError

PARTY_MAIN = Path(__file__).resolve().parents[1] / "net" / "party_main.py"
REPO = Path(__file__).resolve().parents[2]

needs_netns = pytest.mark.skipif(
    not netem.emulation_available(), reason="needs root and `ip netns`"
)


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("privinfer-relay")]


def _party_rounds(net: netem.NetworkSetup, tmp: Path, rounds: int) -> list[dict]:
    cluster = net.init_cluster(tmp / "cluster")
    procs = [
        net.popen(
            i,
            [sys.executable, str(PARTY_MAIN), "--cluster", str(cluster.path.parent)]
            + ["--party", str(i), "--rounds", str(rounds), "--size", "1000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in range(3)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        assert lines, err[-2000:]
        results.append(json.loads(lines[-1]))
    return results


@pytest.mark.parametrize(
    ("profile", "rtt_range", "bw_range", "round_ms_range"),
    [
        ("lan", (0.8, 3.0), (300.0, 1100.0), (0.4, 15.0)),
        ("wan", (18.0, 30.0), (60.0, 110.0), (9.0, 30.0)),
    ],
)
@pytest.mark.netns
@needs_netns
def test_profile_measured_and_party_rounds(
    profile: str,
    rtt_range: tuple[float, float],
    bw_range: tuple[float, float],
    round_ms_range: tuple[float, float],
    tmp_path: Path,
) -> None:
    before = _namespaces()
    with emulated_network(profile, 3) as net:
        m = dict(net.measured)
        mine = _namespaces() - before
        assert len(mine) == 4  # 3 hosts and the hub
        assert len(_relay_threads()) == 3
        assert all(h.startswith("198.18.") for h in net.hosts)
        assert all(a.startswith("127.0.0.1:") for a in net.listen)
        res = _party_rounds(net, tmp_path, rounds=5)
    print(profile, m, "round ms", [round(r["rounds_s"] * 200, 2) for r in res])
    assert _namespaces() == before
    assert not _relay_threads()
    assert m["profile"] == profile
    assert m["rtt_ms_target"] == netem.PROFILES[profile].rtt_ms
    assert m["bandwidth_mbit_target"] == netem.PROFILES[profile].rate_mbit
    assert rtt_range[0] <= m["rtt_ms_measured"] <= rtt_range[1], m
    assert bw_range[0] <= m["bandwidth_mbit_measured"] <= bw_range[1], m
    assert all(r.get("error") is None and r["ok"] for r in res), res
    for r in res:  # one round: every party sends, then waits ~ one one-way delay
        assert round_ms_range[0] <= r["rounds_s"] / 5 * 1000 <= round_ms_range[1], res


@pytest.mark.netns
@needs_netns
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_teardown_on_error_kills_everything(exc: type[BaseException]) -> None:
    before = _namespaces()
    procs: list[subprocess.Popen[bytes]] = []
    with pytest.raises(exc):
        with emulated_pair("wan", measure=False) as net:
            assert net.n_hosts == 2 and len(net.hosts) == 2
            for i in range(2):
                argv = [sys.executable, "-c", "import time; time.sleep(60)"]
                procs.append(net.popen(i, argv, env={}))  # an env without PATH still works
            raise exc("boom")
    assert _namespaces() == before
    assert not _relay_threads()
    assert all(p.poll() is not None for p in procs)


def test_none_profile_is_loopback() -> None:
    with emulated_network("none", 3) as net:
        assert net.hosts == net.listen
        assert all(h.startswith("127.0.0.1:") for h in net.hosts)
        assert len(set(net.hosts)) == 3
        m = dict(net.measured)
        p = net.popen(2, [sys.executable, "-c", "print('hi')"], stdout=subprocess.PIPE)
        assert p.communicate(timeout=30)[0].strip() == b"hi"
    assert m["profile"] == "none" and m["rtt_ms_target"] is None
    assert 0 < m["rtt_ms_measured"] < 5 and m["bandwidth_mbit_measured"] > 100


@pytest.mark.parametrize("check", ["_is_root", "netns_available"])
def test_refuses_without_root_or_netns(monkeypatch: pytest.MonkeyPatch, check: str) -> None:
    monkeypatch.setattr(netem, check, lambda: False)
    for profile in ("lan", "wan"):
        with pytest.raises(NetemUnavailableError) as info:
            with emulated_network(profile, 3):
                pass
        msg = str(info.value)
        assert isinstance(info.value, PrivinferError)
        assert msg.startswith("network emulation needs root and `ip netns`")
        assert msg.count(". ") == 0 and "\n" not in msg
    with emulated_network("none", 2, measure=False) as net:  # loopback needs no privileges
        assert len(net.hosts) == 2


def test_unknown_profile() -> None:
    with pytest.raises(InputError):
        with emulated_network("satellite", 2):
            pass
