"""Shared helpers for the party transport tests: throwaway clusters on free loopback ports."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from privinfer.net.cluster import ClusterConfig, free_ports, init_cluster
from privinfer.net.lifetime import spawn
from privinfer.net.tls import TlsPeerLink, connect_parties

PARTY_MAIN = Path(__file__).with_name("party_main.py")
REPO = Path(__file__).resolve().parents[2]


def make_cluster(path: Path, n: int = 3, **kwargs: Any) -> ClusterConfig:
    return init_cluster(path, [f"127.0.0.1:{p}" for p in free_ports(n)], **kwargs)


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterConfig:
    return make_cluster(tmp_path / "cluster")


def connect_all(cluster: ClusterConfig, timeout_s: float = 5.0, **kwargs: Any) -> list[TlsPeerLink]:
    """Connect every party of `cluster` from threads of this process; re-raise the first error."""
    kwargs.setdefault("connect_timeout_s", 10.0)
    links: dict[int, TlsPeerLink] = {}
    errors: dict[int, BaseException] = {}

    def go(i: int) -> None:
        try:
            links[i] = connect_parties(cluster, i, timeout_s, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            errors[i] = exc

    threads = [
        threading.Thread(target=go, args=(i,), daemon=True) for i in range(cluster.n_parties)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        for link in links.values():
            link.close()
        raise next(iter(errors.values()))
    return [links[i] for i in range(cluster.n_parties)]


def run_parallel(fns: list[Any]) -> list[Any]:
    """Run callables in threads, return their results in order (re-raise the first error)."""
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def go(k: int) -> None:
        try:
            results[k] = fns[k]()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(k,), daemon=True) for k in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def close_all(links: list[TlsPeerLink]) -> None:
    run_parallel([link.close for link in links])


def party_cmd(cluster_path: Path, party: int, *args: str) -> list[str]:
    return [
        sys.executable,
        str(PARTY_MAIN),
        "--cluster",
        str(cluster_path),
        "--party",
        str(party),
        *args,
    ]


def start_party(
    cluster_path: Path, party: int, *args: str, prefix: list[str] | None = None
) -> subprocess.Popen[str]:
    return spawn(
        [*(prefix or []), *party_cmd(cluster_path, party, *args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def last_json(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"party printed no result (rc={proc.returncode}): {err[-2000:]}"
    return json.loads(lines[-1])
