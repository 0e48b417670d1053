"""Benchmark runners for the private modes (mpc, he) and their own workloads, for `privinfer
bench`. Each returns figures plus ready table rows [workload, privinfer, baseline, ratio, how]."""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from privinfer.bench.fidelity import WORKLOADS as FIDELITY_WORKLOADS
from privinfer.bench.he_generate import WORKLOADS as HE_GENERATE_WORKLOADS
from privinfer.bench.mpc_bench import bench_gpt2_shape, bench_mpc_ops, bench_smollm2
from privinfer.bench.mpc_he_bench import WORKLOADS as MPC_HE_WORKLOADS
from privinfer.bench.mpc_he_bench import run_mpc_he
from privinfer.bench.netem import emulated_network
from privinfer.engines.plain import PlainOps
from privinfer.models import gpt2

Say = Callable[[str], None]
PEERS_GPT2 = (
    "SPU (PUMA 3PC) 221 s wall, 46-51 CPU-s/party, 349 MB; CrypTen 16-21 s, 1.64 GB (FACTS.md)"
)


@contextlib.contextmanager
def _mpc_network(args: argparse.Namespace, say: Say) -> Iterator[dict[str, Any]]:
    """Loopback TLS, or three network namespaces with the emulated LAN/WAN between them."""
    if args.net == "none":
        yield {"net": "loopback", "cluster": None, "spawn": None, "measured": {"profile": "none"}}
        return
    say(f"building the emulated {args.net} network (namespaces, tbf, delaying relays)")
    with (
        emulated_network(args.net, 3) as setup,
        tempfile.TemporaryDirectory(prefix="pvi-net-") as tmp,
    ):
        setup.init_cluster(Path(tmp) / "cluster")
        say(f"measured: {setup.measured}")
        yield {
            "net": args.net,
            "cluster": str(Path(tmp) / "cluster"),
            "spawn": setup.popen,
            "measured": setup.measured,
        }


def _mb(x: float) -> str:
    return f"{x / 1e6:.1f} MB"


def run_mpc(
    args: argparse.Namespace, runs: int, steps: int, say: Say, plain: dict[str, Any]
) -> dict[str, Any]:
    if args.net == "none":  # loopback: the CLI's own path (launcher, stores, party processes)
        return _run_mpc_cli_path(say, plain)
    with _mpc_network(args, say) as net:
        say("mpc: SmolLM2 prefill + decode, 3 party processes over TLS (private weights)")
        r = bench_smollm2(
            prompt_tokens=32,
            decode_tokens=max(2, steps // 2),
            net="loopback",
            cluster=net["cluster"],
            spawn=net["spawn"],
        )
    s = plain["smollm2"]
    per_tok = r["decode_median_wall_s"]
    steps_ = r["decode_steps"]
    rounds = statistics.median(x["rounds"] for x in steps_)
    bytes_tok = statistics.median(max(x["bytes_per_party"]) for x in steps_)
    how = (
        f"3 processes, TLS, {net['net']}, 1 thr/party, median of {len(steps_)} steps, "
        f"{rounds:.0f} rounds and {_mb(bytes_tok)}/party per token, peak RSS "
        f"{max(r['peak_rss_mb'])} MB/party"
    )
    return {
        "net": net["measured"],
        "report": r,
        "per_token_s": per_tok,
        "slowdown_vs_plain": per_tok / s["decode_s_per_token"],
        "rounds_per_token": rounds,
        "bytes_per_token": bytes_tok,
        "rows": [
            [
                "SmolLM2-135M prefill, 32 tokens",
                f"{r['prefill']['wall_s']:.1f} s",
                f"plain {s['prefill_s'] * 1000:.0f} ms",
                f"{r['prefill']['wall_s'] / s['prefill_s']:.0f}x",
                how,
            ],
            [
                "SmolLM2-135M decode per token",
                f"{per_tok:.2f} s",
                f"plain {s['decode_s_per_token'] * 1000:.0f} ms",
                f"{per_tok / s['decode_s_per_token']:.0f}x",
                how,
            ],
        ],
    }


def _run_mpc_cli_path(say: Say, plain: dict[str, Any]) -> dict[str, Any]:
    from privinfer.bench.mpc_generate import PROMPT, bench_mpc_cli_path

    say(f"mpc: SmolLM2 greedy on {PROMPT!r} through `privinfer generate --mode mpc`'s path")
    r = bench_mpc_cli_path()
    s = plain["smollm2"]
    per_tok = r["decode_median_wall_s"]
    how = (
        f"the CLI's path: 3 party processes on their share stores, TLS, loopback, 1 thr/party, "
        f"median of {len(r['per_token_s'])} steps, {r['rounds_per_token']:.0f} rounds and "
        f"{_mb(r['bytes_per_token_party0'])}/party per token, peak RSS "
        f"{max(r['peak_rss_mb']):.0f} MB/party, tokens identical to plain: "
        f"{r['identical_to_plain']}"
    )
    return {
        "net": {"profile": "none"},
        "report": r,
        "per_token_s": per_tok,
        "slowdown_vs_plain": per_tok / s["decode_s_per_token"],
        "rounds_per_token": r["rounds_per_token"],
        "bytes_per_token": r["bytes_per_token_party0"],
        "rows": [
            [
                f"SmolLM2-135M prefill, {r['prompt_tokens']}-token chat prompt",
                f"{r['prefill_s']:.1f} s",
                f"plain {s['prefill_s'] * 1000:.0f} ms",
                f"{r['prefill_s'] / s['prefill_s']:.0f}x",
                how,
            ],
            [
                "SmolLM2-135M decode per token",
                f"{per_tok:.2f} s",
                f"plain {s['decode_s_per_token'] * 1000:.0f} ms",
                f"{per_tok / s['decode_s_per_token']:.0f}x",
                how,
            ],
        ],
    }


def workload_mpc_ops(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    with _mpc_network(args, say) as net:
        say("mpc-ops: protocol micro-benchmarks, 3 party processes over TLS")
        ops = bench_mpc_ops(
            net="loopback",
            cluster=net["cluster"],
            spawn=net["spawn"],
            repeats=1 if args.quick else 3,
        )
    rows = [
        [
            op,
            f"{v['wall_s'] * 1000:.1f} ms",
            "",
            "",
            f"{v['rounds']} rounds, {_mb(v['bytes_per_party_max'])}/party, TLS {net['net']}",
        ]
        for op, v in ops.items()
    ]
    return {"mpc-ops": {"net": net["measured"], "ops": ops, "rows": rows}, "plain": None}


def workload_gpt2_shape(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    say("mpc-gpt2-shape: plain float baseline")
    cfg = gpt2.GPT2Config()
    model = gpt2.GPT2(cfg, gpt2.random_gpt2_weights(cfg), PlainOps())
    times = []
    with torch.inference_mode():
        for _ in range(5):
            t0 = time.perf_counter()
            model.forward(list(range(8)), model.ops.new_cache(cfg.n_layers), 0)
            times.append(time.perf_counter() - t0)
    plain_s = statistics.median(times)
    with _mpc_network(args, say) as net:
        say(
            "mpc-gpt2-shape: 12 layers, hidden 768, 8 private tokens, private weights, 3 processes over TLS"
        )
        r = bench_gpt2_shape(net="loopback", cluster=net["cluster"], spawn=net["spawn"])
    f = r["forward"]
    cpu = r.get("process_cpu_s_per_party") or f.get("cpu_s_per_party")
    how = (
        f"TLS {net['net']}, {f['rounds']} rounds, {_mb(f['bytes_total'])} total, CPU-s/party {cpu}, "
        f"max logit error {r['max_logit_error']:.4f}"
    )
    rows = [
        [
            "GPT-2-small shape, 8 tokens, one private forward",
            f"{f['wall_s']:.1f} s",
            f"plain {plain_s * 1000:.0f} ms" if plain_s else "",
            f"{f['wall_s'] / plain_s:.0f}x" if plain_s else "",
            how,
        ],
        ["same, peers on this machine", "", PEERS_GPT2, "", "from FACTS.md, not re-run"],
    ]
    return {
        "mpc-gpt2-shape": {
            "net": net["measured"],
            "report": r,
            "plain_forward_s": plain_s,
            "rows": rows,
        },
        "plain": None,
    }


def run_he(
    args: argparse.Namespace, runs: int, steps: int, say: Say, plain: dict[str, Any]
) -> dict[str, Any]:
    """HE next to plain on MiniLM, measured through the command a user runs (`privinfer embed
    --mode he`, its own server process), on loopback or the emulated LAN/WAN (client and
    server in two namespaces). SmolLM2 under HE takes tens of minutes: `he-smollm2`."""
    from privinfer.bench.he_bench import bench_minilm_cli  # lazy: he_bench imports tenseal

    say(f"he: MiniLM-L6 under CKKS via `privinfer embed --mode he`, net {args.net} (minutes)")
    if args.net == "none":
        r, measured = bench_minilm_cli(), {"profile": "none"}
    else:
        with emulated_network(args.net, 2) as setup:
            say(f"measured: {setup.measured}")
            r, measured = bench_minilm_cli(net=setup), setup.measured
    m = plain["minilm"]
    how = (
        f"N=16384, `privinfer embed --mode he` (1 thread), {r['net']}, {r['rounds']} refresh "
        f"rounds, {_mb(r['bytes_to_server'])} to server, {_mb(r['bytes_to_client'])} back, "
        f"{r['cpu_s_all_processes']:.0f} CPU-s both processes, cosine to plain "
        f"{r['cosine_to_plain']:.6f}"
    )
    return {
        "net": measured,
        "report": r,
        "max_abs_err": 1 - r["cosine_to_plain"],
        "rows": [
            [
                "MiniLM-L6 embedding, 16 tokens",
                f"{r['embed_s']:.0f} s",
                f"plain {m['embed_s'] * 1000:.1f} ms",
                f"{r['embed_s'] / m['embed_s']:.0f}x",
                how,
            ]
        ],
    }


def run_tee_he(
    args: argparse.Namespace, runs: int, steps: int, say: Say, plain: dict[str, Any]
) -> dict[str, Any]:
    """tee+he next to plain on MiniLM through `privinfer embed --mode tee+he`: on loopback
    (server and refresh enclave started by the command), or per link (`--net lan|wan`): the
    client in host 0 on that link, the server in host 1, the enclave in host 2 on LAN to the
    server. The figures are the client's: its traffic and its round trips during compute."""
    from privinfer.bench.he_bench import bench_minilm_cli

    say(f"tee+he: MiniLM-L6 via `privinfer embed --mode tee+he`, net {args.net} (minutes)")
    if args.net == "none":
        r, measured = bench_minilm_cli(mode="tee+he"), {"profile": "none"}
    else:  # per link: the client on `--net`, the server and its enclave on LAN
        from privinfer.bench.netem import PROFILES, NetProfile, emulated_links

        client = PROFILES[args.net]
        server = NetProfile(f"{args.net}-rtt", client.rtt_ms, PROFILES["lan"].rate_mbit, "2mbit")
        with emulated_links([client, server, PROFILES["lan"]]) as setup:
            say(f"measured: {setup.measured}")
            r, measured = bench_minilm_cli(net=setup, mode="tee+he"), setup.measured
    m = plain["minilm"]
    how = (
        f"N=16384, `privinfer embed --mode tee+he` (1 thread), links {r['net']} (client, server, "
        f"enclave); {r['rounds']} refreshes by the enclave, client "
        f"{_mb(r['bytes_to_server'])} up, {_mb(r['bytes_to_client'])} down, "
        f"{r['client_round_trips']} client round trips during compute, "
        f"{r['cpu_s_all_processes']:.0f} CPU-s all processes, cosine to plain "
        f"{r['cosine_to_plain']:.6f}"
    )
    return {
        "net": measured,
        "report": r,
        "max_abs_err": 1 - r["cosine_to_plain"],
        "rows": [
            [
                "MiniLM-L6 embedding, 16 tokens",
                f"{r['embed_s']:.0f} s",
                f"plain {m['embed_s'] * 1000:.1f} ms",
                f"{r['embed_s'] / m['embed_s']:.0f}x",
                how,
            ]
        ],
    }


def workload_he_ops(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    from privinfer.bench.he_bench import (  # lazy: imports tenseal
        bench_deliver,
        bench_matvec,
        bench_packed,
    )

    say("he-ops: 576x576 matvec on one ciphertext (N=8192), single thread")
    mv = bench_matvec(n=576)
    say("he-ops: 64 packed vectors through 576x576")
    pk = bench_packed(vectors=64, n=576)
    say("he-ops: delivery without / with circuit privacy (MiniLM output, SmolLM2 logits T=16)")
    dl = {"minilm": bench_deliver(1, 2), "smollm2_token_t16": bench_deliver(96, 2)}
    rows = [
        [
            "576x576 encrypted matvec, one ciphertext, N=8192",
            f"{mv['median_s'] * 1000:.0f} ms",
            "target 500 ms",
            "",
            f"{mv['rotations']} rotations, max error {mv['max_abs_error']:.1e}, 1 thread",
        ],
        [
            "576x576 on 64 packed vectors, per vector",
            f"{pk['median_per_vector_s'] * 1000:.1f} ms",
            "target 50 ms",
            "",
            f"max error {pk['max_abs_error']:.1e}, 1 thread",
        ],
    ]
    for what, d in (
        ("MiniLM sentence", dl["minilm"]),
        ("SmolLM2 token, T=16", dl["smollm2_token_t16"]),
    ):
        raw, fl = d["raw"], d["flooded"]
        rows.append(
            [
                f"output delivery per {what}: {d['ciphertexts']} ciphertexts from level {d['level']}",
                f"{fl['median_s'] * 1000:.0f} ms, {fl['bytes'] / 1e6:.2f} MB",
                f"without circuit privacy {raw['median_s'] * 1000:.0f} ms, {raw['bytes'] / 1e6:.2f} MB",
                f"{fl['median_s'] / raw['median_s']:.2f}x",
                "mask + fresh encryption of zero + flood (he.privacy), server and client, 1 thread",
            ]
        )
    return {"he-ops": {"matvec": mv, "packed": pk, "deliver": dl, "rows": rows}, "plain": None}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "mpc": run_mpc,
    "he": run_he,
    "tee+he": run_tee_he,
    "mpc+he": run_mpc_he,
}
WORKLOADS: dict[str, Callable[[argparse.Namespace, Say], dict[str, Any]]] = {
    "mpc-ops": workload_mpc_ops,
    "mpc-gpt2-shape": workload_gpt2_shape,
    "he-ops": workload_he_ops,
    **FIDELITY_WORKLOADS,
    **HE_GENERATE_WORKLOADS,
    **MPC_HE_WORKLOADS,
}
