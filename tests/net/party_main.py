"""Test entry point: one party process that connects over TLS and exchanges rounds.

Run as `python tests/net/party_main.py --cluster DIR --party I [--rounds R --size N]`; prints one
JSON line with its stats (and, with --wait-for, a `ready` line before waiting on that peer).
Payloads are a public test pattern, never secrets.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time

from privinfer.net.cluster import load_cluster
from privinfer.net.peer import PeerError
from privinfer.net.tls import connect_parties


def pattern(src: int, dst: int, rnd: int, size: int) -> bytes:
    seed = hashlib.sha256(f"{src}->{dst}#{rnd}".encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--party", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--connect-timeout", type=float, default=20.0)
    ap.add_argument(
        "--wait-for", type=int, default=None, help="after the rounds, recv from this peer"
    )
    ap.add_argument("--hang", action="store_true", help="after the rounds, print ready and sleep")
    a = ap.parse_args()
    cluster = load_cluster(a.cluster)
    me = a.party
    result: dict[str, object] = {"party": me}
    t0 = time.monotonic()
    try:
        with connect_parties(cluster, me, a.timeout, connect_timeout_s=a.connect_timeout) as link:
            result["connect_s"] = time.monotonic() - t0
            peers = [p for p in range(cluster.n_parties) if p != me]
            ok = True
            t1 = time.monotonic()
            for r in range(a.rounds):
                got = link.round({p: pattern(me, p, r, a.size) for p in peers}, peers, label="test")
                ok &= all(got[p] == pattern(p, me, r, a.size) for p in peers)
            result["rounds_s"] = time.monotonic() - t1
            result["ok"] = ok
            result["session"] = link.session_id.hex()
            result["pairwise"] = {
                str(p): hashlib.sha256(link.pairwise_key(p)).hexdigest()[:16] for p in peers
            }
            result["stats"] = dataclasses.asdict(link.stats)
            if a.hang:
                print(json.dumps({"ready": True}), flush=True)
                time.sleep(120)
            if a.wait_for is not None:
                print(json.dumps({"ready": True}), flush=True)
                t2 = time.monotonic()
                try:
                    link.recv(a.wait_for)
                    result["error"] = None
                except PeerError as exc:
                    result["error"] = {"peer": exc.peer, "reason": exc.reason}
                result["wait_s"] = time.monotonic() - t2
    except PeerError as exc:
        result["error"] = {"peer": exc.peer, "reason": exc.reason}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
