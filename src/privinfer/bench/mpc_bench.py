"""MPC benchmarks: per-op costs, the GPT-2-small peer workload and SmolLM2 prefill/decode, with
three in-process parties or three OS processes over mutually authenticated TLS links (figures
only: the benchmark client derives its input masks from a public seed, so it hides nothing).

Each suite is one party program; `run_suite` runs it in-process (`net="memory"`) or spawns
`python -m privinfer.bench.mpc_bench --party i ...` per party over a cluster (`net="loopback"`: a fresh
temporary 127.0.0.1 cluster; or pass `cluster=` a cluster folder, e.g. one behind the LAN/WAN
emulation). Results are per party: wall and CPU seconds, rounds and bytes sent.
    python -m privinfer.bench.mpc_bench {rounds,ops,gpt2,smollm2} [--net memory|loopback] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import privinfer
from privinfer.models.costs import peak_rss_mb
from privinfer.models.gpt2 import GPT2, GPT2Config, gpt2_reference_logits, random_gpt2_weights
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.prf import PairwiseRandomness
from privinfer.mpc.protocols import activations, arith, compare, nonlinear, norms, softmax
from privinfer.mpc.ring import DEFAULT_FRAC_BITS, bits_to_bytes
from privinfer.mpc.runtime import N_PARTIES, Party, run_local
from privinfer.mpc.shares import RShare, reveal, reveal_ring, share_from
from privinfer.net.cluster import free_ports, init_cluster, load_cluster
from privinfer.net.lifetime import sigterm_as_exit
from privinfer.net.lifetime import spawn as spawn_child
from privinfer.net.memory import MemoryLink
from privinfer.net.tls import connect_parties

Program = Callable[[Party], dict[str, Any]]


class SeededClient:
    """A `ClientPort` whose input masks come from a public seed, so that separate party processes
    agree on them without a client process. For cost measurement only: it hides nothing."""

    def __init__(self, seed: int = 0) -> None:
        self._seed, self._calls = seed, 0

    def token_input(self, party_id: int, ids: Sequence[int], vocab: int) -> bytes:
        g = torch.Generator().manual_seed(self._seed * 1000 + self._calls)
        self._calls += 1
        ring = torch.zeros(len(ids), vocab, dtype=torch.int64)
        ring[torch.arange(len(ids)), torch.as_tensor(list(ids))] = 1
        lim = 1 << 62
        r0 = torch.randint(-lim, lim, ring.shape, generator=g, dtype=torch.int64)
        r1 = torch.randint(-lim, lim, ring.shape, generator=g, dtype=torch.int64)
        comps = (r0, r1, ring - r0 - r1)
        return bits_to_bytes(torch.stack((comps[party_id], comps[(party_id + 1) % N_PARTIES])))

    def output(self, party_id: int, payload: bytes, shape: tuple[int, ...], frac_bits: int) -> None:
        return None


def _cpu_s() -> float:
    return time.thread_time()


def _metered(p: Party, fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    st = p.link.stats
    r0, b0, w0, c0, p0 = (
        st.rounds,
        st.bytes_sent,
        time.perf_counter(),
        _cpu_s(),
        time.process_time(),
    )
    out = fn()
    return out, {
        "wall_s": time.perf_counter() - w0,
        "cpu_s": _cpu_s() - c0,
        "process_cpu_s": time.process_time() - p0,
        "rounds": st.rounds - r0,
        "bytes_sent": st.bytes_sent - b0,
    }


# ------------------------------------------------------------------------------ ops suite
def _op_cases(g: torch.Generator) -> list[tuple[str, list[torch.Tensor], Callable[..., RShare]]]:
    def rn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    gamma = rn(576).abs() + 0.5

    def hundred_rounds(p: Party, s: list[RShare]) -> RShare:
        for _ in range(100):
            p.send_prev_recv_next(s[0].a)
        return s[0]

    return [
        ("100 rounds of 8 bytes", [rn(1)], hundred_rounds),
        ("compare 1e5", [rn(100_000, scale=100)], lambda p, s: compare.ltz(p, s[0])),
        (
            "matmul 32x576 @ 576x576",
            [rn(32, 576), rn(576, 576, scale=0.05)],
            lambda p, s: arith.matmul(p, s[0], s[1]),
        ),
        (
            "matmul 32x768 @ 768x3072",
            [rn(32, 768), rn(768, 3072, scale=0.05)],
            lambda p, s: arith.matmul(p, s[0], s[1]),
        ),
        ("softmax 9x256", [rn(9, 256, scale=5)], lambda p, s: softmax.softmax(p, s[0])),
        ("rsqrt 1e4", [rn(10_000).abs() * 100 + 0.01], lambda p, s: nonlinear.rsqrt(p, s[0])),
        ("exp 1e4", [-rn(10_000).abs() * 5], lambda p, s: nonlinear.exp_nonpos(p, s[0])),
        ("silu 37x1536", [rn(37, 1536, scale=3)], lambda p, s: activations.silu(p, s[0])),
        ("gelu 37x1536", [rn(37, 1536, scale=3)], lambda p, s: activations.gelu(p, s[0])),
        ("rms_norm 37x576", [rn(37, 576, scale=3)], lambda p, s: norms.rms_norm(p, s[0], gamma)),
    ]


def ops_program(repeats: int = 3, seed: int = 0) -> Program:
    """Each op `repeats` times on inputs shared by party 0; medians per party."""

    def program(p: Party) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, inputs, fn in _op_cases(torch.Generator().manual_seed(seed)):
            xs = [share_from(p, 0, x if p.pid == 0 else None, tuple(x.shape)) for x in inputs]
            runs = [_metered(p, lambda fn=fn, xs=xs: fn(p, xs))[1] for _ in range(repeats)]
            out[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        return out

    return program


# ----------------------------------------------------------------------------- gpt2 suite
def gpt2_program(tokens: int = 8, seed: int = 0, frac_bits: int = DEFAULT_FRAC_BITS) -> Program:
    """GPT-2-small shape, random weights shared by party 0, private token ids, one forward."""
    cfg = GPT2Config()
    weights = random_gpt2_weights(cfg, seed)
    ids = torch.randint(0, cfg.vocab_size, (tokens,), generator=torch.Generator().manual_seed(1))
    ids_list = [int(i) for i in ids]

    def program(p: Party) -> dict[str, Any]:
        ops = MpcOps(p, SeededClient(seed), private_weights=True)
        model, prep = _metered(p, lambda: GPT2(cfg, weights, ops))
        logits, cost = _metered(p, lambda: model.forward(ids_list, model.new_cache(), 0))
        res: dict[str, Any] = {"prepare": prep, "forward": cost}
        got = reveal(p, logits)[-1]
        if p.pid == 0:
            ref = gpt2_reference_logits(cfg, weights, ids_list)[-1]
            res["max_logit_error"] = (got - ref).abs().max().item()
            res["logit_std"] = ref.std().item()
        res["by_op"] = {k: vars(v) for k, v in p.meter.totals().items()}
        return res

    return program


# -------------------------------------------------------------------------- smollm2 suite
def smollm2_program(
    prompt_tokens: int = 32,
    decode_tokens: int = 8,
    frac_bits: int = DEFAULT_FRAC_BITS,
    layers: int | None = None,
) -> Program:
    """Real SmolLM2-135M (private weights), a prompt of exactly `prompt_tokens` ids, then greedy
    decode steps with the KV cache (argmax in MPC, the index opened). `layers` keeps only the
    first decoder layers (a cheaper, smaller-memory run for comparing protocol overheads)."""
    lm = privinfer.load("smollm2-135m")
    if layers is not None:
        lm.cfg = dataclasses.replace(lm.cfg, n_layers=layers)
        lm.weights = {
            k: v
            for k, v in lm.weights.items()
            if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers
        }
    text = "Explain in one short paragraph why the sky is blue and why sunsets are red. " * 4
    ids = lm.prompt_ids(text)[:prompt_tokens]
    built = {"parties": 0}
    lock = threading.Lock()

    def program(p: Party) -> dict[str, Any]:
        ops = MpcOps(p, SeededClient(), private_weights=True)
        model, prep = _metered(p, lambda: lm.build(ops))
        with lock:  # once every party of this process has its shares, drop the float model
            built["parties"] += 1
            if built["parties"] == (N_PARTIES if isinstance(p.link, MemoryLink) else 1):
                lm.weights = {}
                gc.collect()
        cache = model.new_cache()

        def step(toks: list[int], start: int) -> int:
            logits = model.forward(toks, cache, start)
            _, idx = compare.argmax_lastdim(p, logits.map(lambda t: t[-1]))
            return int(reveal_ring(p, idx).item())

        p.meter.reset()
        tok, pre = _metered(p, lambda: step(ids, 0))
        pre["by_op"] = {k: vars(v) for k, v in p.meter.totals().items()}
        steps, toks = [], [tok]
        for k in range(decode_tokens):
            p.meter.reset()
            tok, cost = _metered(p, lambda t=tok, k=k: step([t], len(ids) + k))
            cost["by_op"] = {n: vars(v) for n, v in p.meter.totals().items()}
            steps.append(cost)
            toks.append(tok)
        rss = peak_rss_mb()
        return {
            "prepare": prep,
            "prefill": pre,
            "decode": steps,
            "tokens": toks,
            "peak_rss_mb": rss,
        }

    return program


def rounds_program(rounds: int = 2000, elements: int = 1) -> Program:
    """`rounds` resharing rounds of `elements` int64 each: the per-round cost of the link."""

    def program(p: Party) -> dict[str, Any]:
        x = torch.zeros(elements, dtype=torch.int64)

        def run() -> None:
            for _ in range(rounds):
                p.send_prev_recv_next(x)

        _, cost = _metered(p, run)
        return {"rounds": cost}

    return program


def onehot_program(rows: Sequence[int] = (1, 37), vocab: int = 49_152, seed: int = 0) -> Program:
    """The parties' one-hot input check (`mpc.protocols.onehot`) on one-hot inputs of each row
    count at `vocab` (default SmolLM2's), after the session's coin; the client's shares come from
    a seeded generator, the same in every party process."""
    from privinfer.mpc.protocols.onehot import OneHotCheck

    def program(p: Party) -> dict[str, Any]:
        check = OneHotCheck(p)
        _, coin = _metered(p, check._coin_stream)
        out: dict[str, Any] = {"coin": coin}
        g = torch.Generator().manual_seed(seed)
        for n in rows:
            x = torch.zeros(n, vocab, dtype=torch.int64)
            x[torch.arange(n), torch.randint(0, vocab, (n,), generator=g)] = 1
            r0, r1 = (torch.randint(-(2**62), 2**62, x.shape, generator=g) for _ in range(2))
            comps = (r0, r1, x - r0 - r1)
            share = RShare(comps[p.pid], comps[(p.pid + 1) % N_PARTIES], p.pid, 0)
            _, out[f"rows_{n}"] = _metered(p, lambda s=share: check.check(s))
        return out

    return program


def _batch_program(**params: Any) -> Program:
    from privinfer.bench.mpc_batch_bench import batch_program

    return batch_program(**params)


PROGRAMS: dict[str, Callable[..., Program]] = {
    "smollm2-batch": _batch_program,
    "onehot": onehot_program,
    "rounds": rounds_program,
    "ops": ops_program,
    "gpt2": gpt2_program,
    "smollm2": smollm2_program,
}


# ------------------------------------------------------------------------------- running


def run_suite(
    suite: str,
    net: str = "memory",
    cluster: str | os.PathLike[str] | None = None,
    params: dict[str, Any] | None = None,
    timeout_s: float = 3600.0,
    spawn: Callable[[int, list[str]], subprocess.Popen] | None = None,
) -> list[dict[str, Any]]:
    """Run `suite` with three parties; returns the three per-party result dicts. `spawn(i, argv)`
    starts party i's process (default: a local subprocess; the LAN/WAN harness runs it in host
    i's network namespace)."""
    params = params or {}
    if net == "memory" and cluster is None:
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        out = run_local(PROGRAMS[suite](**params), timeout_s=timeout_s)
        for r in out:
            r["total_wall_s"] = time.perf_counter() - t0
        return out
    with tempfile.TemporaryDirectory(prefix="privinfer-bench-") as tmp:
        if cluster is None:
            hosts = [f"127.0.0.1:{port}" for port in free_ports(N_PARTIES)]
            init_cluster(Path(tmp) / "cluster", hosts)
            cluster = Path(tmp) / "cluster"
        procs = []
        for i in range(N_PARTIES):
            cmd = [sys.executable, "-m", "privinfer.bench.mpc_bench", suite, "--party", str(i)]
            cmd += ["--cluster", str(cluster), "--out", str(Path(tmp) / f"p{i}.json")]
            cmd += ["--params", json.dumps(params)]
            procs.append(spawn(i, cmd) if spawn else spawn_child(cmd))
        for pr in procs:
            if pr.wait(timeout=timeout_s) != 0:
                raise RuntimeError(f"bench party exited with status {pr.returncode}")
        return [json.loads((Path(tmp) / f"p{i}.json").read_text()) for i in range(N_PARTIES)]


def _party_main(suite: str, party_id: int, cluster_dir: str, out: str, params: dict) -> int:
    torch.set_num_threads(1)
    program = PROGRAMS[suite](**params)
    path = Path(cluster_dir)
    cluster = load_cluster(path / "cluster.toml" if path.is_dir() else path)
    with connect_parties(cluster, party_id, timeout_s=600.0) as link:
        prev, nxt = (party_id - 1) % N_PARTIES, (party_id + 1) % N_PARTIES
        party = Party(
            link, PairwiseRandomness.buffered(link.pairwise_key(prev), link.pairwise_key(nxt))
        )
        t0, c0 = time.perf_counter(), time.process_time()
        res = program(party)
        res["total_wall_s"] = time.perf_counter() - t0
        res["process_cpu_s"] = time.process_time() - c0
        res["wire"] = {str(k): v for k, v in link.wire_stats().items()}
    Path(out).write_text(json.dumps(res))
    return 0


def summarise(suite: str, parties: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold the three party results into one report (max over parties; bytes also summed)."""
    if suite == "smollm2-batch":
        from privinfer.bench.mpc_batch_bench import summarise_batches

        return summarise_batches(parties)
    if suite == "rounds":
        return {
            k: [round(r["rounds"][k], 4) for r in parties]
            for k in ("wall_s", "cpu_s", "process_cpu_s")
        }
    if suite == "onehot":
        return {
            key: {
                "rounds": parties[0][key]["rounds"],
                "bytes_per_party": [r[key]["bytes_sent"] for r in parties],
                "cpu_s_per_party": [round(r[key]["cpu_s"], 4) for r in parties],
                "wall_s": round(max(r[key]["wall_s"] for r in parties), 4),
            }
            for key in parties[0]
            if key == "coin" or key.startswith("rows_")
        }
    if suite == "ops":
        return {
            op: {
                "wall_s": max(r[op]["wall_s"] for r in parties),
                "cpu_s_max": max(r[op]["cpu_s"] for r in parties),  # party thread
                "rounds": parties[0][op]["rounds"],
                "bytes_per_party_max": max(r[op]["bytes_sent"] for r in parties),
            }
            for op in parties[0]
            if isinstance(parties[0][op], dict) and op != "wire"
        }

    separate = "process_cpu_s" in parties[0]  # one OS process per party

    def fold(key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        cpu = {  # per party: its process; in-process: the party thread (helper threads not
            # counted), and all three parties' CPU together
            "cpu_s_per_party": [
                round(r[key]["process_cpu_s" if separate else "cpu_s"], 2) for r in rows
            ]
        }
        if not separate:
            cpu["cpu_s_all_parties"] = round(max(r[key]["process_cpu_s"] for r in rows), 2)
        else:  # the protocol thread alone (the rest: the links' I/O threads)
            cpu["thread_cpu_s_per_party"] = [round(r[key]["cpu_s"], 2) for r in rows]
        return {
            "wall_s": max(r[key]["wall_s"] for r in rows),
            **cpu,
            "rounds": rows[0][key]["rounds"],
            "bytes_per_party": [r[key]["bytes_sent"] for r in rows],
            "bytes_total": sum(r[key]["bytes_sent"] for r in rows),
        }

    extra = {}
    if "process_cpu_s" in parties[0]:  # party processes: CPU of the whole process (TLS threads)
        extra["process_cpu_s_per_party"] = [round(r["process_cpu_s"], 2) for r in parties]
    if suite == "gpt2":
        out = {"forward": fold("forward", parties), "prepare": fold("prepare", parties), **extra}
        out["max_logit_error"] = parties[0]["max_logit_error"]
        out["logit_std"] = parties[0]["logit_std"]
        return out
    steps = []
    for k in range(len(parties[0]["decode"])):
        rows = [{"s": r["decode"][k]} for r in parties]
        steps.append(fold("s", rows))
    return {
        "prefill": fold("prefill", parties),
        "decode_steps": steps,
        "decode_median_wall_s": float(np.median([s["wall_s"] for s in steps])) if steps else None,
        "tokens": parties[0]["tokens"],
        "by_op_party0": {
            "prefill": _brief(parties[0]["prefill"]["by_op"]),
            "decode_step_1": _brief(parties[0]["decode"][0]["by_op"]) if steps else {},
        },
        "peak_rss_mb": [round(r["peak_rss_mb"]) for r in parties],
        **extra,
    }


def _brief(by_op: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {
        k: {
            "rounds": v["rounds"],
            "mb_sent": round(v["bytes_sent"] / 1e6, 2),
            "wall_s": round(v["wall_s"], 2),
        }
        for k, v in by_op.items()
    }


def bench_mpc_ops(
    net: str = "loopback", cluster: str | None = None, repeats: int = 3, spawn: Any = None
) -> dict:
    """Per-op latency, rounds and bytes per party (`net`: "memory" or "loopback"/a cluster)."""
    return summarise("ops", run_suite("ops", net, cluster, {"repeats": repeats}, spawn=spawn))


def bench_gpt2_shape(
    net: str = "memory", cluster: str | None = None, tokens: int = 8, spawn: Any = None
) -> dict:
    """The peers' GPT-2-small workload: one private forward over `tokens` private ids."""
    return summarise("gpt2", run_suite("gpt2", net, cluster, {"tokens": tokens}, spawn=spawn))


def bench_smollm2(
    prompt_tokens: int = 32,
    decode_tokens: int = 8,
    net: str = "memory",
    cluster: str | None = None,
    spawn: Any = None,
) -> dict:
    """SmolLM2-135M prefill and per-token decode (private weights)."""
    params = {"prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens}
    return summarise("smollm2", run_suite("smollm2", net, cluster, params, spawn=spawn))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="MPC benchmarks (figures, not tests).")
    ap.add_argument("suite", choices=sorted(PROGRAMS))
    ap.add_argument("--net", default="memory", choices=["memory", "loopback"])
    ap.add_argument("--cluster", default=None, help="cluster folder (runs party processes)")
    ap.add_argument("--params", default="{}", help="JSON keyword arguments of the suite")
    ap.add_argument("--party", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    params = json.loads(args.params)
    if args.party is not None:
        return _party_main(args.suite, args.party, args.cluster, args.out, params)
    with sigterm_as_exit():  # SIGTERM unwinds: the parties stop, the temp folder goes
        report = summarise(args.suite, run_suite(args.suite, args.net, args.cluster, params))
    report = {
        "suite": args.suite,
        "net": args.net if args.cluster is None else args.cluster,
        "report": report,
    }
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
