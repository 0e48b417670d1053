"""Costs of the HE linear layers (privinfer.twopc.he_linear.HeLinear) on the model shapes: CPU
seconds per party, bytes each party sends, rounds, wall seconds; the output checked exact
against numpy's uint64 matmul (mod 2^64). Weights N(0, 0.05), activations N(0, 1), f = 16.

Run: python -m privinfer.bench.he_linear_bench [--set gpt2|smollm2|smollm2-prefill|all]
         [--tls] [--json PATH]
Local: the two parties are threads over in-process links (CPU = each thread's CPU time). TLS:
two processes over mutually authenticated TLS 1.3 on loopback (CPU = each process's CPU time,
`wire` = bytes on the TLS socket). One thread each either way; the HE key exchange (the
client's public key, once per session) is reported apart as `setup`.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from privinfer.twopc import ring
from privinfer.twopc.he_linear import HeLinear, plan
from privinfer.twopc.runtime import TwoParty, run_local

F = 16
SETS = {
    "gpt2": [  # one GPT-2-small layer's linears, 8 tokens
        ("gpt2 qkv", 8, 768, 2304),
        ("gpt2 attn out", 8, 768, 768),
        ("gpt2 fc", 8, 768, 3072),
        ("gpt2 proj", 8, 3072, 768),
    ],
    "smollm2": [  # one decode step (one row)
        ("smollm2 q/o", 1, 576, 576),
        ("smollm2 k/v", 1, 576, 192),
        ("smollm2 gate/up", 1, 576, 1536),
        ("smollm2 down", 1, 1536, 576),
        ("smollm2 lm head", 1, 576, 49152),
    ],
    "smollm2-prefill": [  # a 37-token prefill
        ("smollm2 q/o x37", 37, 576, 576),
        ("smollm2 k/v x37", 37, 576, 192),
        ("smollm2 gate/up x37", 37, 576, 1536),
        ("smollm2 down x37", 37, 1536, 576),
    ],
}


def _inputs(rows: int, n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(rows * 7919 + n * 31 + m)
    x = ring.encode(rng.normal(0, 1, (rows, n)), F)
    x0 = rng.integers(0, 2**64, x.shape, dtype=np.uint64, endpoint=False)
    return x, x0, rng.normal(0, 0.05, (n, m))


def _expected(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.matmul(x, ring.encode(w, F))  # uint64 matmul wraps mod 2^64


def run_shape(p: TwoParty, lin: HeLinear, rows: int, n: int, m: int) -> dict:
    """One party's side of one shape: its CPU and wall seconds, bytes sent, rounds, result."""
    x, x0, w = _inputs(rows, n, m)
    mine = x0 if p.pid == 0 else x - x0
    s = p.link.stats
    wire = getattr(p.link, "wire_stats", None)
    clock = time.process_time if wire else time.thread_time
    c0 = clock()
    if p.pid == 0:  # offline: the weight's plaintexts, ahead of the input
        lin.prepare(p, w, rows)
    prep = clock() - c0
    p.exchange(b"")  # both start the online phase together
    r0, b0 = s.rounds, s.bytes_sent
    w0 = sum(v["bytes_sent"] for v in wire().values()) if wire else 0
    c0, t0 = clock(), time.perf_counter()
    out = lin.matmul(p, mine, w if p.pid == 0 else None, m)
    res = {
        "offline_cpu_s": prep,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": clock() - c0,
        "bytes_sent": s.bytes_sent - b0,
        "rounds": s.rounds - r0,
    }
    if wire:
        res["wire_bytes_sent"] = sum(v["bytes_sent"] for v in wire().values()) - w0
    theirs = p.exchange(out.tobytes())
    res["exact"] = bool(
        np.array_equal(out + np.frombuffer(theirs, np.uint64).reshape(out.shape), _expected(x, w))
    )
    return res


def _session(p: TwoParty, lin: HeLinear, shapes: list) -> dict:
    t0, c0 = time.perf_counter(), time.thread_time()
    lin.matmul(p, np.zeros((1, 1), np.uint64), np.zeros((1, 1)) if p.pid == 0 else None, 1)
    out = {"setup": {"wall_s": time.perf_counter() - t0, "cpu_s": time.thread_time() - c0}}
    for name, rows, n, m in shapes:
        out[name] = run_shape(p, lin, rows, n, m)
    return out


def measure_local(shapes: list) -> list[dict]:
    """Both parties as threads (in-process links)."""
    lin = HeLinear()
    return run_local(lambda p: _session(p, lin, shapes), timeout_s=1200)


def tls_party(cluster: str, pid: int, set_name: str) -> None:
    from privinfer.twopc.runtime import connect_tls

    p = connect_tls(cluster, pid, timeout_s=120.0)
    res = _session(p, HeLinear(), _shapes(set_name))
    p.link.close()
    print(json.dumps(res))


def measure_tls(set_name: str) -> list[dict]:
    """Two processes over mutually authenticated TLS on loopback (a fresh two-party cluster)."""
    import subprocess
    import sys
    import tempfile

    from privinfer.net.cluster import free_ports, init_cluster

    with tempfile.TemporaryDirectory() as tmp:
        init_cluster(tmp, [f"127.0.0.1:{port}" for port in free_ports(2)])
        cmd = [sys.executable, "-m", "privinfer.bench.he_linear_bench", "--tls-party", tmp]
        procs = [
            subprocess.Popen([*cmd, str(i), set_name], stdout=subprocess.PIPE, text=True)
            for i in range(2)
        ]
        return [
            json.loads(pr.communicate(timeout=1800)[0].strip().splitlines()[-1]) for pr in procs
        ]


def _shapes(set_name: str) -> list:
    return [s for k, v in SETS.items() if set_name in (k, "all") for s in v]


def table(results: list[dict], shapes: list, transport: str) -> list[dict]:
    rows = []
    for name, r, n, m in shapes:
        a, b = results[0][name], results[1][name]
        lay = plan(r, n, m)
        row = {
            "shape": name,
            "rows": r,
            "in": n,
            "out": m,
            "transport": transport,
            "layout": [lay.r, lay.ni, lay.mi],
            "cts_in_out": list(lay.costs()[:2]),
            "server_offline_cpu_s": a["offline_cpu_s"],
            "server_cpu_s": a["cpu_s"],
            "client_cpu_s": b["cpu_s"],
            "wall_s": a["wall_s"],
            "server_sent": a["bytes_sent"],
            "client_sent": b["bytes_sent"],
            "rounds": a["rounds"],
            "exact": a["exact"] and b["exact"],
        }
        if "wire_bytes_sent" in a:
            row["wire_sent"] = a["wire_bytes_sent"] + b["wire_bytes_sent"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="all", choices=[*SETS, "all"])
    ap.add_argument("--tls", action="store_true", help="two processes over TLS (loopback)")
    ap.add_argument("--json", help="append the rows to this JSON file")
    ap.add_argument(
        "--tls-party", nargs=3, metavar=("CLUSTER", "PID", "SET"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if args.tls_party:
        tls_party(args.tls_party[0], int(args.tls_party[1]), args.tls_party[2])
        return
    shapes = _shapes(args.set)
    transport = "tls" if args.tls else "local"
    res = measure_tls(args.set) if args.tls else measure_local(shapes)
    rows = table(res, shapes, transport)
    if args.json:
        try:
            with open(args.json) as f:
                old = json.load(f)
        except FileNotFoundError:
            old = []
        with open(args.json, "w") as f:
            json.dump(old + rows, f, indent=1)
    print(
        f"setup ({transport}): server {res[0]['setup']['cpu_s']:.2f} CPU-s, "
        f"client {res[1]['setup']['cpu_s']:.2f} CPU-s, {res[0]['setup']['wall_s']:.2f} s wall"
    )
    print(
        "| shape | rows x in x out | layout r/ni/mi | cts in/out | server offline CPU-s "
        "| server CPU-s | client CPU-s "
        "| wall s | server MB | client MB | rounds | exact |"
    )
    for r in rows:
        print(
            f"| {r['shape']} | {r['rows']}x{r['in']}x{r['out']} | {'/'.join(map(str, r['layout']))} "
            f"| {r['cts_in_out'][0]}/{r['cts_in_out'][1]} | {r['server_offline_cpu_s']:.2f} "
            f"| {r['server_cpu_s']:.2f} "
            f"| {r['client_cpu_s']:.2f} | {r['wall_s']:.2f} | {r['server_sent'] / 1e6:.2f} "
            f"| {r['client_sent'] / 1e6:.2f} | {r['rounds']} | {r['exact']} |"
        )


if __name__ == "__main__":
    main()
