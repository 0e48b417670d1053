"""Costs of the two-party OT toolkit (privinfer.twopc): OT extension throughput and, per
protocol on a vector, online and offline rounds and bytes (both parties' sent bytes added) and
wall seconds, two parties as threads over in-process links on this machine.

Run: python -m privinfer.bench.twopc_bench [--n 10000] [--ots 1048576] [--slow-n 1000]
     python -m privinfer.bench.twopc_bench --dry-run   (errors at f = 12, 16, 20)
     python -m privinfer.bench.twopc_bench --tls 10000 (two processes over TLS, loopback)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from privinfer.twopc import activations, arith, compare, nonlinear, norms, ring, softmax, trunc
from privinfer.twopc.runtime import TwoParty, run_local

F = 16


def _shared(p: TwoParty, x: np.ndarray) -> np.ndarray:
    e = ring.encode(x, F).reshape(-1)
    return ring.share_input(p, 0, e if p.pid == 0 else None, e.size).reshape(x.shape)


def measure(label: str, n: int, make: Callable[[], np.ndarray], fn) -> dict:  # type: ignore[no-untyped-def]
    """Run fn(party, shares) for both parties; return the op's costs (summed over parties)."""
    x = make()

    def prog(p: TwoParty):  # type: ignore[no-untyped-def]
        s = _shared(p, x)
        start = time.perf_counter()
        with p.op(label):
            fn(p, s)
        return p.meter.by_op, time.perf_counter() - start

    (m0, _), (m1, _) = run_local(prog, timeout_s=600)
    on = [m[label] for m in (m0, m1)]
    off = [m.get(f"{label}/offline") for m in (m0, m1)]
    wall = on[0].wall_s
    return {
        "op": label,
        "n": n,
        "online_rounds": on[0].rounds,
        "online_bytes": on[0].bytes_sent + on[1].bytes_sent,
        "offline_rounds": off[0].rounds if off[0] else 0,
        "offline_bytes": sum(o.bytes_sent for o in off if o),
        "wall_s": wall,
        "offline_wall_s": off[0].wall_s if off[0] else 0.0,
    }


def ot_throughput(n_ots: int) -> dict:
    """Random OTs with party 0 as sender: one IKNP extension of n_ots after setup."""

    def prog(p: TwoParty):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        p.prepare(n_ots, 0)
        return time.perf_counter() - start, p.meter.by_op["prepare/offline"]

    (wall, cost0), (_, cost1) = run_local(prog, timeout_s=600)
    sent = cost0.bytes_sent + cost1.bytes_sent
    return {"ots": n_ots, "wall_s": wall, "ots_per_s": n_ots / wall, "bytes_per_ot": sent / n_ots}


def precision_dry_run(fracs: tuple[int, ...] = (12, 16, 20)) -> list[dict]:
    """Max abs error vs float64 of silu, softmax and rms_norm (one row with a SmolLM2-like
    massive activation, 2.4e4) at each fixed-point precision f (ring Z_2^64)."""
    rng = np.random.default_rng(1)
    x = np.linspace(-30, 30, 601)
    logits = rng.normal(0, 3, (4, 50))
    acts = rng.normal(0, 1, (3, 64))
    acts[1] *= 100
    acts[2, 3] = 2.4e4
    out = []
    for f in fracs:

        def prog(p: TwoParty, f: int = f):  # type: ignore[no-untyped-def]
            def share(v: np.ndarray) -> np.ndarray:
                e = ring.encode(v, f).reshape(-1)
                return ring.share_input(p, 0, e if p.pid == 0 else None, e.size).reshape(v.shape)

            ones = ring.encode(np.ones(64), f) if p.pid == 0 else None
            res = (
                activations.silu(p, share(x)),
                softmax.softmax(p, share(logits)),
                norms.rms_norm(p, share(acts), ones),
            )
            return [ring.decode(ring.reveal(p, r), f) for r in res]

        silu, sm, rms = run_local(prog, frac_bits=f)[0]
        xd = ring.decode(ring.encode(x, f), f)
        ld = ring.decode(ring.encode(logits, f), f)
        ad = ring.decode(ring.encode(acts, f), f)
        e = np.exp(ld - ld.max(axis=1, keepdims=True))
        ref_rms = ad / np.sqrt((ad**2).mean(axis=1, keepdims=True) + 1e-5)
        out.append(
            {
                "f": f,
                "silu": float(np.abs(silu - xd / (1 + np.exp(-xd))).max()),
                "softmax": float(np.abs(sm - e / e.sum(axis=1, keepdims=True)).max()),
                "rms_norm": float(np.abs(rms - ref_rms).max()),
            }
        )
    return out


def tls_party(cluster: str, pid: int, n: int) -> None:
    """One party of the TLS measurement: setup, then MSB and a product on n elements; prints
    JSON (wall seconds, rounds, payload and TLS wire bytes sent by this party)."""
    import json

    from privinfer.twopc.runtime import connect_tls

    start = time.perf_counter()
    p = connect_tls(cluster, pid, timeout_s=120.0)
    setup_s = time.perf_counter() - start
    s = _shared(p, np.linspace(-5, 5, n))
    res = {"setup_s": setup_s}
    for label, fn in (("msb", compare.msb), ("mul", lambda p, s: arith.mul(p, s, s))):
        r0, b0 = p.link.stats.rounds, p.link.stats.bytes_sent
        w0 = sum(v["bytes_sent"] for v in p.link.wire_stats().values())  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        fn(p, s)
        res[label] = {
            "wall_s": time.perf_counter() - t0,
            "rounds": p.link.stats.rounds - r0,
            "bytes_sent": p.link.stats.bytes_sent - b0,
            "wire_bytes_sent": sum(v["bytes_sent"] for v in p.link.wire_stats().values()) - w0,  # type: ignore[attr-defined]
        }
    p.link.close()
    print(json.dumps(res))


def tls_measure(n: int) -> list[dict]:
    """Two processes over mutually authenticated TLS on loopback (a fresh two-party cluster)."""
    import json
    import subprocess
    import sys
    import tempfile

    from privinfer.net.cluster import free_ports, init_cluster

    with tempfile.TemporaryDirectory() as tmp:
        init_cluster(tmp, [f"127.0.0.1:{port}" for port in free_ports(2)])
        cmd = [sys.executable, "-m", "privinfer.bench.twopc_bench", "--tls-party", tmp]
        procs = [
            subprocess.Popen([*cmd, str(i), str(n)], stdout=subprocess.PIPE, text=True)
            for i in range(2)
        ]
        return [json.loads(pr.communicate(timeout=600)[0].strip().splitlines()[-1]) for pr in procs]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--slow-n", type=int, default=1000, help="n for reciprocal and rsqrt")
    ap.add_argument("--ots", type=int, default=1 << 20)
    ap.add_argument("--dry-run", action="store_true", help="only the precision dry run")
    ap.add_argument("--tls", type=int, default=0, help="only: MSB and mul on N over TLS")
    ap.add_argument("--tls-party", nargs=3, metavar=("CLUSTER", "PID", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tls_party:
        tls_party(args.tls_party[0], int(args.tls_party[1]), int(args.tls_party[2]))
        return
    if args.tls:
        for pid, r in enumerate(tls_measure(args.tls)):
            print(
                f"party {pid}: setup {r['setup_s']:.2f} s; "
                + "; ".join(
                    f"{k} {r[k]['wall_s']:.2f} s, {r[k]['rounds']} rounds, "
                    f"{r[k]['bytes_sent']} payload B, {r[k]['wire_bytes_sent']} TLS B sent"
                    for k in ("msb", "mul")
                )
            )
        return
    if args.dry_run:
        for r in precision_dry_run():
            print(
                f"f={r['f']}: max abs error silu {r['silu']:.2e}, softmax {r['softmax']:.2e}, "
                f"rms_norm (with a 2.4e4 activation) {r['rms_norm']:.2e}"
            )
        return
    n, sn = args.n, args.slow_n
    rng = np.random.default_rng(0)
    t = ot_throughput(args.ots)
    print(
        f"IKNP random OT: {t['ots']} OTs in {t['wall_s']:.2f} s = {t['ots_per_s']:.3g} OT/s, "
        f"{t['bytes_per_ot']:.1f} bytes/OT"
    )
    normal = lambda: rng.normal(0, 4, n)  # noqa: E731
    rows = [
        measure("msb", n, normal, compare.msb),
        measure("b2a(msb)", n, normal, lambda p, s: compare.b2a(p, compare.msb(p, s))),
        measure("relu", n, normal, compare.relu),
        measure("trunc", n, normal, lambda p, s: trunc.trunc(p, s, F)),
        measure("trunc exact", n, normal, lambda p, s: trunc.trunc(p, s, F, exact=True)),
        measure("mul", n, normal, lambda p, s: arith.mul(p, s, s)),
        measure(
            "mul_private",
            n,
            normal,
            lambda p, s: arith.mul_private(
                p, s, ring.encode(np.ones(n), F) if p.pid == 0 else None, 0
            ),
        ),
        measure("exp", n, lambda: -np.abs(rng.normal(0, 4, n)), nonlinear.exp_nonpos),
        measure("silu", n, normal, activations.silu),
        measure("gelu", n, normal, activations.gelu),
        measure("reciprocal", sn, lambda: rng.uniform(0.01, 1000, sn), nonlinear.reciprocal),
        measure("rsqrt", sn, lambda: rng.uniform(0.01, 1000, sn), nonlinear.rsqrt),
        measure("softmax 8x1024", 8 * 1024, lambda: rng.normal(0, 4, (8, 1024)), softmax.softmax),
        measure(
            "rms_norm 8x576",
            8 * 576,
            lambda: rng.normal(0, 4, (8, 576)),
            lambda p, s: norms.rms_norm(p, s, ring.encode(np.ones(576), F) if p.pid == 0 else None),
        ),
        measure("argmax 1x49152", 49152, lambda: rng.normal(0, 4, (1, 49152)), softmax.argmax),
    ]
    print(
        f"{'op':18} {'n':>7} {'on.rounds':>9} {'on.B/elem':>10} {'off.rounds':>10} "
        f"{'off.B/elem':>10} {'on.s':>6} {'off.s':>6}"
    )
    for r in rows:
        print(
            f"{r['op']:18} {r['n']:>7} {r['online_rounds']:>9} {r['online_bytes'] / r['n']:>10.1f} "
            f"{r['offline_rounds']:>10} {r['offline_bytes'] / r['n']:>10.1f} {r['wall_s']:>6.2f} "
            f"{r['offline_wall_s']:>6.2f}"
        )


if __name__ == "__main__":
    main()
