"""One party of the TLS two-party tests: `python party_main.py CLUSTER PID MODE` prints JSON."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from privinfer.net.peer import PeerError
from privinfer.twopc import arith, compare, ring
from privinfer.twopc.runtime import connect_tls


def main() -> None:
    cluster, pid, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    party = connect_tls(cluster, pid, timeout_s=20.0)
    n = 1000
    x = ring.encode(np.linspace(-5, 5, n), 16)
    s = ring.share_input(party, 0, x if pid == 0 else None, n)
    if mode == "die" and pid == 1:
        os._exit(0)  # the peer dies without closing its session
    start = time.monotonic()
    try:
        sq = ring.reveal(party, arith.mul(party, s, s))
        neg = ring.reveal(party, compare.b2a(party, compare.msb(party, s)))
    except PeerError as exc:
        print(json.dumps({"error": str(exc), "after_s": time.monotonic() - start}))
        return
    print(
        json.dumps(
            {
                "sq_err": float(np.abs(ring.decode(sq, 16) - ring.decode(x, 16) ** 2).max()),
                "neg_ok": bool(np.array_equal(neg, (x.view(np.int64) < 0).astype(np.uint64))),
                "rounds": party.link.stats.rounds,
            }
        )
    )
    party.link.close()


if __name__ == "__main__":
    main()
