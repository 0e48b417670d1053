"""`privinfer bench throughput --mode tee --sessions 1,2,4,8,16`: aggregate tokens/s of concurrent
sessions, their p50/p95 time per token and time to first token, and the enclave's peak RSS.

Security assumption: none beyond the TEE mode's own; it starts a throw-away software platform
and enclave in a temporary directory (removed afterwards) and attests every session like any
client. Sessions are attested before the clock starts, then all send their request at once;
every session count runs once per round and the rounds interleave the counts, so machine noise
spreads over all of them. Figures are medians over rounds. mpc is not measured yet.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import InputError

TARGET_SPEEDUP_16 = 4.0  # aggregate tokens/s at 16 sessions over 1 session
TARGET_P95_RATIO_16 = 3.0  # p95 time per token at 16 sessions over 1 session
MEASURED = ("tee",)


def parse_sessions(text: str) -> list[int]:
    """`1,2,4,8,16` -> [1, 2, 4, 8, 16] (positive, at most 64, no repeats)."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--sessions must be comma-separated integers (got {text!r})") from None
    if not counts or any(not 1 <= n <= 64 for n in counts) or len(set(counts)) != len(counts):
        raise InputError("--sessions must list distinct session counts between 1 and 64")
    return counts


def check_modes(mode_names: list[str]) -> None:
    """Refuse modes this workload does not measure, before anything starts."""
    for name in mode_names or ["tee"]:
        if name == "mpc":
            raise InputError(
                "throughput for mode mpc is not measured yet: use --mode tee (mpc comes later)"
            )
        if name not in MEASURED:
            raise InputError(f"throughput measures mode tee only, not {name}")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _tree_rss_kb(pid: int) -> int:
    """Resident set of `pid` and its descendants (the host and its enclave), in kB."""
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        todo += kids.get(q, [])
        try:
            for line in Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _one_count(client: Any, n: int, steps: int, pid: int, chat: bool = True) -> dict[str, Any]:
    """n sessions attested, then one request each, all at once; figures as the clients saw them."""
    from privinfer.tee.client import TeeResult

    sessions = [client.attest() for _ in range(n)]
    results = [TeeResult() for _ in range(n)]
    go = threading.Barrier(n + 1)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        req = {
            "prompt": f"Session {i}: write a short story about a lighthouse keeper.",
            "chat": chat,
            "max_new_tokens": steps,
            "temperature": 0.8,
            "seed": 1000 + i,
        }
        go.wait()
        try:
            for _ in sessions[i].stream(req, results[i]):
                pass
        except BaseException as exc:  # reported after the round
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    peak_kb, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak_kb[0] = max(peak_kb[0], _tree_rss_kb(pid))
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    for s in sessions:
        s.close()
    if errors:
        raise errors[0]
    tokens = sum(len(r.token_ids) for r in results)
    per_token = [x for r in results for x in r.token_s]
    ttft = [r.first_token_s for r in results]
    return {
        "sessions": n,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "per_token_s_p50": _pct(per_token, 0.5),
        "per_token_s_p95": _pct(per_token, 0.95),
        "ttft_s_p50": _pct(ttft, 0.5),
        "ttft_s_p95": _pct(ttft, 0.95),
        "peak_rss_mb": peak_kb[0] / 1024,
    }


def _prefix_ttft(client: Any, lm: Any, runs: int) -> dict[str, float]:
    """TTFT of one chat prompt that starts with the public prefix, and of the same ids with the
    first token changed (same length and work, no prefix hit), interleaved; medians."""
    ids = lm.prompt_ids("Write a short story about a lighthouse keeper.")
    miss = [ids[1], *ids[1:]]  # the second token twice: no longer starts with the prefix
    hit_s, miss_s = [], []
    from privinfer.tee.client import TeeResult

    for _ in range(runs):
        for prompt_ids, out in ((ids, hit_s), (miss, miss_s)):
            s, res = client.attest(), TeeResult()
            for _m in s.stream({"prompt_ids": prompt_ids, "max_new_tokens": 1}, res):
                pass
            s.close()
            out.append(res.first_token_s)
    return {
        "prompt_tokens": len(ids),
        "ttft_s_prefix_cached": statistics.median(hit_s),
        "ttft_s_no_prefix": statistics.median(miss_s),
    }


def bench_throughput(
    sessions: list[int],
    *,
    runs: int = 2,
    steps: int = 32,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The tee curve: per session count, medians over `runs` interleaved rounds."""
    import privinfer
    from privinfer.tee.client import TeeClient
    from privinfer.tee.local import LocalServer

    say = progress or (lambda _m: None)
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="privinfer-bench-throughput-"))
    srv = LocalServer(
        platform_dir=tmp / "platform",
        data_dir=tmp / "data",
        root=tmp / "root.pem",
        threads=threads,
        max_sessions=max(64, max(sessions)),
        max_sessions_per_client=max(32, 2 * max(sessions)),
        stdout=None,
    )
    rounds: dict[int, list[dict[str, Any]]] = {n: [] for n in sessions}
    try:
        say("starting the enclave")
        srv.start()
        lm = privinfer.load("smollm2-135m", threads=threads)
        with TeeClient(srv.url, root_cert=srv.root, model_file=lm.source) as client:
            _one_count(client, 2, 2, srv.proc.pid)  # warm-up: connections, caches
            for r in range(runs):
                for n in sessions:
                    say(f"round {r + 1}/{runs}: {n} session(s)")
                    rounds[n].append(_one_count(client, n, steps, srv.proc.pid))
            say("prefix cache: time to first token with and without")
            prefix = _prefix_ttft(client, lm, max(3, runs))
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    curve = [
        {
            "sessions": n,
            **{
                k: round(med(r[k] for r in rounds[n]), 6)
                for k in rounds[n][0]
                if k not in ("sessions", "tokens")
            },
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rounds[n]), 1),
        }
        for n in sessions
    ]
    by_n = {c["sessions"]: c for c in curve}
    meets: dict[str, bool] = {}
    if 1 in by_n and 16 in by_n:
        meets["speedup_16"] = (
            by_n[16]["tokens_per_s"] >= TARGET_SPEEDUP_16 * by_n[1]["tokens_per_s"]
        )
        meets["p95_ratio_16"] = (
            by_n[16]["per_token_s_p95"] <= TARGET_P95_RATIO_16 * by_n[1]["per_token_s_p95"]
        )
    return {
        "mode": "tee",
        "platform": "software",
        "threads": threads,
        "runs": runs,
        "decode_steps": steps,
        "curve": curve,
        "prefix_cache": {k: round(v, 6) for k, v in prefix.items()},
        "targets": {"speedup_16": TARGET_SPEEDUP_16, "p95_ratio_16": TARGET_P95_RATIO_16},
        "meets_targets": meets,
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    """Rows for the results table: one per session count."""
    how = (
        f"{r['threads']} thr, median of {r['runs']}, {r['decode_steps']} tokens, software platform"
    )
    base = r["curve"][0]["tokens_per_s"]
    return [
        [
            f"tee throughput, {c['sessions']} concurrent session(s)",
            f"{c['tokens_per_s']:.1f} tok/s",
            f"p50/p95 {c['per_token_s_p50'] * 1000:.0f}/{c['per_token_s_p95'] * 1000:.0f} ms/tok, "
            f"TTFT p50 {c['ttft_s_p50'] * 1000:.0f} ms, RSS {c['peak_rss_mb']:.0f} MB",
            f"{c['tokens_per_s'] / base:.2f}x",
            how,
        ]
        for c in r["curve"]
    ]


def plot(r: dict[str, Any], out: Path) -> Path:
    """One PNG: aggregate tokens/s and p50/p95 time per token against the session count (log)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    n = [c["sessions"] for c in r["curve"]]
    fig = Figure(figsize=(9, 3.8))
    FigureCanvasAgg(fig)
    a, b = fig.subplots(1, 2)
    a.plot(n, [c["tokens_per_s"] for c in r["curve"]], "o-", color="#2ca02c", label="tee")
    a.plot(n, [r["curve"][0]["tokens_per_s"] * k for k in n], ":", color="#7f7f7f", label="linear")
    a.set(xscale="log", yscale="log", xlabel="concurrent sessions", ylabel="aggregate tokens/s")
    for key, style in (("per_token_s_p50", "o-"), ("per_token_s_p95", "s--")):
        b.plot(n, [c[key] * 1000 for c in r["curve"]], style, label=key.split("_")[-1])
    b.plot(n, [c["ttft_s_p50"] * 1000 for c in r["curve"]], "^-.", label="TTFT p50")
    b.set(xscale="log", yscale="log", xlabel="concurrent sessions", ylabel="ms")
    for ax in (a, b):
        ax.set_xticks(n, [str(k) for k in n])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"tee continuous batching, SmolLM2-135M, {r['threads']} torch thread(s), software platform"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def run_throughput(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    """The `throughput` workload of `privinfer bench`."""
    check_modes(list(args.mode or []))
    if args.net != "none":
        raise InputError("tee throughput runs over loopback; --net lan|wan is for mpc (not yet)")
    counts = parse_sessions(getattr(args, "sessions", None) or "1,2,4,8,16")
    runs = 1 if args.quick else args.runs
    steps = getattr(args, "steps", None) or (8 if args.quick else 32)
    r = bench_throughput(counts, runs=runs, steps=steps, progress=say)
    r["rows"] = rows(r)
    if not args.no_plots:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        r["plot"] = str(plot(r, out / f"{time.strftime('%Y-%m-%d')}-throughput-tee.png"))
    return {"tee": r}


if __name__ == "__main__":  # redraw the PNG from a stored result: python -m ... <json> <png>
    import json
    import sys

    plot(json.loads(Path(sys.argv[1]).read_text())["tee"], Path(sys.argv[2]))
