"""`privinfer bench`: runs the plain baseline and the asked-for modes, writes JSON and a table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from privinfer.api import set_threads
from privinfer.errors import InputError


def _say(args: argparse.Namespace):  # noqa: ANN202
    def say(msg: str) -> None:
        if not args.json:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    return say


def run_bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    threads = set_threads(args.threads)
    modes = [m for m in (args.mode or ["plain"]) if m != "plain"]
    runs = 2 if args.quick else args.runs
    if runs < 1:
        raise InputError("--runs must be at least 1")
    from privinfer.bench.plain import bench_plain

    say = _say(args)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "threads": threads}
    result["plain"] = bench_plain(
        runs=runs,
        decode_steps=4 if args.quick else 16,
        with_reference=not args.no_reference,
        progress=say,
    )
    for mode in modes:
        raise InputError(f"benchmark for mode {mode!r} is not available in this version")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = (
        out_dir
        / f"{result['date']}-{'-'.join(['plain', *modes])}{'-quick' if args.quick else ''}.json"
    )
    path.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(render_table(result))
        print(f"\nwritten: {path}")
    return 0


def render_table(result: dict[str, Any]) -> str:
    """Markdown results table from a bench JSON (the README's table is made by this)."""
    p = result["plain"]
    s, m = p["smollm2"], p["minilm"]
    rows = ["| workload | privinfer | reference | ratio |", "|---|---|---|---|"]

    def row(name: str, ours: float, ref: float | None) -> None:
        r = f"{ref * 1000:.1f} ms" if ref else "n/a"
        ratio = f"{ours / ref:.2f}x" if ref else "n/a"
        rows.append(f"| {name} | {ours * 1000:.1f} ms | {r} | {ratio} |")

    row(
        f"SmolLM2-135M prefill, {s['prompt_tokens']} tokens",
        s["prefill_s"],
        s.get("transformers_prefill_s"),
    )
    row(
        "SmolLM2-135M decode, per token",
        s["decode_s_per_token"],
        s.get("transformers_decode_s_per_token"),
    )
    row(
        f"MiniLM-L6 embedding, {m['tokens']} tokens",
        m["embed_s"],
        m.get("sentence_transformers_embed_s"),
    )
    rows.append(
        f"\nplain engine (fp32 torch) vs transformers / sentence-transformers, medians of "
        f"{p['runs']} runs, {p['threads']} thread(s), torch {p['torch']}, {p['machine']}"
    )
    return "\n".join(rows)
