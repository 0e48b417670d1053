"""`privinfer bench`: named workloads across modes in one invocation, always with the plain
baseline in the same run; writes benchmarks/results/<date>-<workload>.json, a Markdown table and
PNG plots. Figures are medians; threads, machine and network profile are recorded."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privinfer import modes
from privinfer.api import set_threads
from privinfer.bench import private_modes
from privinfer.bench.plain import bench_plain
from privinfer.bench.table import render
from privinfer.errors import InputError

Say = Callable[[str], None]


def _say(args: argparse.Namespace) -> Say:
    """Progress lines on stderr with elapsed time (rich's console log on a terminal)."""
    t0 = time.perf_counter()
    quiet = args.json
    console = None
    if sys.stderr.isatty():
        from rich.console import Console  # lazy: only on a terminal, and rich is slow to import

        console = Console(stderr=True)

    def say(msg: str) -> None:
        if quiet:
            return
        line = f"[bench {time.perf_counter() - t0:6.1f} s] {msg}"
        if console is not None:
            console.log(line, markup=False)
        else:
            print(line, file=sys.stderr, flush=True)

    return say


def _tee(
    args: argparse.Namespace, runs: int, steps: int, say: Say, plain: dict[str, Any]
) -> dict[str, Any]:
    from privinfer.bench.tee_bench import bench_tee  # lazy: the TEE client pulls httpx and rich

    r = bench_tee(runs=runs, decode_steps=steps, progress=say)
    how = f"{r['threads']} thr, median of {runs}, software platform, loopback HTTP"
    r["per_token_s"] = r["tee_per_token_s_median"]
    r["slowdown_vs_plain"] = r["decode_ratio_tee_over_plain"]
    r["rows"] = [
        [
            "attestation + handshake",
            f"{r['attest_handshake_s_median'] * 1000:.1f} ms",
            "target 50 ms",
            "",
            how,
        ],
        [
            "SmolLM2-135M decode per token, client -> host -> enclave",
            f"{r['tee_per_token_s_median'] * 1000:.1f} ms",
            f"plain {r['plain_per_token_s_median'] * 1000:.1f} ms",
            f"{r['decode_ratio_tee_over_plain']:.2f}x",
            how,
        ],
    ]
    return r


def _mode_runner(mode: str) -> Callable[..., dict[str, Any]]:
    runners: dict[str, Callable[..., dict[str, Any]]] = {"tee": _tee, **private_modes.RUNNERS}
    if mode not in runners:
        raise InputError(f"no benchmark for mode {mode!r} in this version")
    return runners[mode]


def check_modes_measured(workload: str, mode_names: list[str]) -> None:
    """Refuse a `--mode` whose plug-in does not list `workload` in its `bench_workloads` (plain,
    the baseline of every workload, is always accepted)."""
    for name in (n for n in mode_names if n != "plain"):
        mode = modes.get(name)
        if workload not in mode.bench_workloads:
            raise InputError(
                f"workload {workload} does not measure mode {name} "
                f"(mode {name} is measured by: {', '.join(mode.bench_workloads) or 'none'})"
            )


def run_generate(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    runs = 2 if args.quick else args.runs
    steps = getattr(args, "steps", None) or (4 if args.quick else 16)
    result: dict[str, Any] = {
        "plain": bench_plain(
            runs=runs, decode_steps=steps, with_reference=not args.no_reference, progress=say
        ),
        "modes": {},
    }
    for mode in [m for m in (args.mode or []) if m != "plain"]:
        say(f"mode {mode}")
        result["modes"][mode] = _mode_runner(mode)(args, runs, steps, say, result["plain"])
    return result


def _throughput(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    from privinfer.bench.throughput import run_throughput  # lazy: starts the TEE client

    return run_throughput(args, say)


def run_proxy(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    """`privinfer bench proxy`: per-token overhead of `privinfer serve` over the direct mode
    call (plain, tee) and time to first token through it (plain, tee, mpc; mpc skipped with
    --quick)."""
    from privinfer.bench.proxy_bench import bench_proxy  # lazy: starts servers, pulls openai

    runs = 2 if args.quick else args.runs
    steps = getattr(args, "steps", None) or (4 if args.quick else 16)
    ttft = () if args.quick else ("mpc",)
    return {"proxy": bench_proxy(runs=runs, decode_steps=steps, ttft_modes=ttft, progress=say)}


WORKLOADS: dict[str, Callable[[argparse.Namespace, Say], dict[str, Any]]] = {
    "generate": run_generate,
    "throughput": _throughput,
    "proxy": run_proxy,
}


def _extra_workloads() -> dict[str, Callable[[argparse.Namespace, Say], dict[str, Any]]]:
    return {**WORKLOADS, **private_modes.WORKLOADS}


def _git(*args: str) -> str:
    here = Path(__file__).resolve().parent
    done = subprocess.run(
        ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def _commit() -> str | None:
    """The checkout's short commit id (with "+dirty" for local changes), when there is one."""
    if os.environ.get("PRIVINFER_COMMIT"):  # set by whoever runs from an exported tree
        return os.environ["PRIVINFER_COMMIT"]
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_bench(args: argparse.Namespace) -> int:
    """`privinfer bench`: SIGTERM unwinds it like Ctrl-C, so parties, servers, network
    namespaces and temp folders it started are stopped and removed."""
    from privinfer.net.lifetime import sigterm_as_exit

    with sigterm_as_exit():
        return _run_bench(args)


def _run_bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    threads = set_threads(args.threads)
    if args.runs < 1:
        raise InputError("--runs must be at least 1")
    if getattr(args, "steps", None) is not None and args.steps < 1:
        raise InputError("--steps must be at least 1")
    workloads = _extra_workloads()
    if args.workload not in workloads:
        raise InputError(
            f"unknown workload {args.workload!r}: use one of {', '.join(sorted(workloads))}"
        )
    if args.workload == "throughput":  # mpc: a clear "not yet" before the generic refusal
        from privinfer.bench.throughput import check_modes

        check_modes(list(args.mode or []))
    check_modes_measured(args.workload, list(args.mode or []))
    say = _say(args)
    result: dict[str, Any] = {
        "workload": args.workload,
        "date": time.strftime("%Y-%m-%d"),
        "threads": threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "quick": bool(args.quick),
        "commit": _commit(),
        "net": {"profile": args.net},
    }
    result.update(workloads[args.workload](args, say))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = "-".join(["plain", *sorted(result["modes"])]) if "modes" in result else ""
    stem = (
        f"{result['date']}-{args.workload}"
        + (f"-{modes}" if modes else "")
        + (f"-{args.net}" if args.net != "none" else "")
        + ("-quick" if args.quick else "")
    )
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    plots: list[Path] = []
    if not args.no_plots:
        from privinfer.bench.plots import make_plots  # lazy: matplotlib; skipped by --no-plots

        plots = make_plots(result, out_dir, stem)
    if args.json:
        print(json.dumps({**result, "written": [str(path), *map(str, plots)]}, default=str))
    else:
        print(render([path]))
        print(f"\nwritten: {path}" + "".join(f"\n         {p}" for p in plots))
    return 0
