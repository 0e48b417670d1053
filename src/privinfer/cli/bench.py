"""`privinfer bench`: the parser; the workloads run in `privinfer.bench.runner`."""

from __future__ import annotations

import argparse
from typing import Any

from privinfer.cli import options
from privinfer.cli.main import add_common
from privinfer.errors import InputError

WORKLOADS_HELP = "generate, throughput, proxy, mpc-ops, mpc-gpt2-shape, mpc-fidelity, he-ops, he-fidelity, he-smollm2, mpc-he-layer, mpc-he-smollm2, mpc-he-minilm"


def cmd_bench(args: argparse.Namespace) -> int:
    options.check_threads(args)
    options.check_positive("--runs", args.runs)
    if args.steps is not None:
        options.check_positive("--steps", args.steps)
    if not args.workload.strip():
        raise InputError("the workload name is empty")
    from privinfer.bench.runner import run_bench

    return run_bench(args)


def register(sub: Any) -> None:
    """Add `bench`."""
    b = sub.add_parser(
        "bench",
        help="benchmark workloads across modes, plain baseline in the same run",
        description="Run a named workload; the plain baseline always runs in the same invocation. "
        "Writes <out>/<date>-<workload>.json, a Markdown table and PNG plots.",
    )
    b.add_argument("workload", nargs="?", default="generate", help=f"one of {WORKLOADS_HELP}")
    b.add_argument(
        "--mode",
        action="append",
        default=None,
        choices=options.mode_names(),
        help="mode to measure next to plain, repeatable (default: plain only)",
    )
    b.add_argument("--runs", type=int, default=5, metavar="N", help="runs per figure (median)")
    b.add_argument("--quick", action="store_true", help="fewer runs and steps (a few minutes)")
    b.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help="decode steps of the generate workload (default: 16, 4 with --quick; mpc on "
        "--net lan/wan takes half, mpc on loopback runs the CLI's 8-token generation)",
    )
    b.add_argument(
        "--net",
        default="none",
        choices=("none", "lan", "wan"),
        help="emulated network between MPC parties / HE client and server (lan/wan need root)",
    )
    b.add_argument(
        "--sessions", default=None, help="throughput: session counts (default: 1,2,4,8,16)"
    )
    b.add_argument("--out", default="benchmarks/results", help="folder for JSON and plots")
    b.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the transformers / sentence-transformers reference runs",
    )
    b.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    add_common(b)
    b.set_defaults(func=cmd_bench)
