"""Round-latency benchmark for the TLS party links (3 party processes over loopback).

Run `python -m privinfer.net.linkbench [--small-rounds 2000] [--big-rounds 20] [--repeat 3]`.
It creates a throwaway cluster (fresh CA and party keys in a temp dir, free loopback ports),
starts three party processes that connect with `connect_parties`, and times `link.round()` with
small payloads (64 B to each peer) and with 1 MiB payloads, plus process CPU time per round.
Payloads are public constant bytes; the cluster keys are deleted afterwards. Not a test: numbers
depend on machine load, so it reports medians over rounds and repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from privinfer.net.cluster import free_ports, init_cluster, load_cluster
from privinfer.net.lifetime import sigterm_as_exit, spawn
from privinfer.net.tls import connect_parties


def _phase(link, peers: list[int], size: int, rounds: int) -> dict[str, float]:
    payload = bytes(size)
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        t = time.perf_counter()
        got = link.round({p: payload for p in peers}, peers, label="bench")
        times.append(time.perf_counter() - t)
        assert all(len(got[p]) == size for p in peers)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    times.sort()
    return {
        "median_ms": 1e3 * statistics.median(times),
        "p90_ms": 1e3 * times[int(0.9 * (len(times) - 1))],
        "mean_ms": 1e3 * wall / rounds,
        "cpu_ms_per_round": 1e3 * cpu / rounds,
    }


def _worker(cluster_dir: str, party: int, small: int, big: int, big_size: int) -> None:
    cluster = load_cluster(cluster_dir)
    with connect_parties(cluster, party, 30.0, connect_timeout_s=30.0) as link:
        peers = [p for p in range(cluster.n_parties) if p != party]
        _phase(link, peers, 64, 200)  # warm-up
        res = {
            "party": party,
            "small": _phase(link, peers, 64, small),
            "big": _phase(link, peers, big_size, big),
        }
    print(json.dumps(res), flush=True)


def _run_once(small: int, big: int, big_size: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="privinfer-linkbench-") as tmp:
        cluster = init_cluster(Path(tmp) / "c", [f"127.0.0.1:{p}" for p in free_ports(3)])
        cmd = [sys.executable, "-m", "privinfer.net.linkbench", "--worker", str(cluster.path)]
        args = ["--small-rounds", str(small), "--big-rounds", str(big), "--big-size", str(big_size)]
        procs = [
            spawn(
                [*cmd, "--party", str(i), *args], stdout=subprocess.PIPE, text=True, env=os.environ
            )
            for i in range(3)
        ]
        out = []
        for p in procs:
            stdout, _ = p.communicate(timeout=600)
            lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
            if p.returncode or not lines:
                raise SystemExit(f"party process failed (rc={p.returncode})")
            out.append(json.loads(lines[-1]))
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-rounds", type=int, default=2000)
    ap.add_argument("--big-rounds", type=int, default=20)
    ap.add_argument("--big-size", type=int, default=1 << 20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--party", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        _worker(a.worker, a.party, a.small_rounds, a.big_rounds, a.big_size)
        return 0
    keys = ("median_ms", "p90_ms", "mean_ms", "cpu_ms_per_round")
    runs: dict[str, dict[str, list[float]]] = {ph: {k: [] for k in keys} for ph in ("small", "big")}
    for r in range(a.repeat):
        res = _run_once(a.small_rounds, a.big_rounds, a.big_size)
        for ph in runs:
            for k in keys:
                # per repeat: the slowest party's median (a round waits for everyone), mean CPU
                vals = [p[ph][k] for p in res]
                runs[ph][k].append(statistics.mean(vals) if k.startswith("cpu") else max(vals))
        line = {ph: {k: round(runs[ph][k][-1], 4) for k in keys} for ph in runs}
        print(f"repeat {r}: {json.dumps(line)}", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) {load:.2f}; {os.cpu_count()} CPUs")
    for ph, size in (("small", 64), ("big", a.big_size)):
        med = {k: statistics.median(v) for k, v in runs[ph].items()}
        print(
            f"{ph:5s} ({size} B to each of 2 peers): round median {med['median_ms']:.4f} ms, "
            f"p90 {med['p90_ms']:.4f} ms, mean {med['mean_ms']:.4f} ms, "
            f"CPU {med['cpu_ms_per_round']:.4f} ms/round/process"
        )
    return 0


if __name__ == "__main__":
    with sigterm_as_exit():  # SIGTERM unwinds: the party processes stop, the temp folder goes
        sys.exit(main())
