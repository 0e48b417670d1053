"""Render the README's results table from benchmark JSON files (never typed by hand).

python -m privinfer.bench.table benchmarks/results/*.json --update README.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else (f"{x * 1000:.1f} ms" if x < 10 else f"{x:.1f} s")


def plain_rows(res: dict[str, Any], source: str) -> list[str]:
    p = res["plain"]
    s, m = p["smollm2"], p["minilm"]
    note = f"{p['threads']} thr, median of {p['runs']}, `{source}`"
    rows = []

    def row(workload: str, ours: float, ref: float | None, ref_name: str) -> None:
        ratio = f"{ours / ref:.2f}x" if ref else "n/a"
        rows.append(
            f"| plain | {workload} | {_ms(ours)} | {ref_name} {_ms(ref)} | {ratio} | {note} |"
        )

    row(
        f"SmolLM2-135M prefill, {s['prompt_tokens']} tokens",
        s["prefill_s"],
        s.get("transformers_prefill_s"),
        "transformers",
    )
    row(
        "SmolLM2-135M decode, per token",
        s["decode_s_per_token"],
        s.get("transformers_decode_s_per_token"),
        "transformers",
    )
    row(
        f"MiniLM-L6 embedding, {m['tokens']} tokens",
        m["embed_s"],
        m.get("sentence_transformers_embed_s"),
        "sentence-transformers",
    )
    return rows


ROW_MAKERS = {"plain": plain_rows}


def render(files: list[Path]) -> str:
    lines = [
        "| mode | workload | privinfer | baseline | ratio | how |",
        "|---|---|---|---|---|---|",
    ]
    for f in sorted(files):
        res = json.loads(f.read_text())
        if not isinstance(res, dict):  # a module bench's own record (he_linear_bench): no rows
            continue
        net_of_run = res.get("net")  # privinfer bench: a dict; mpc_bench suites: a name
        if not isinstance(net_of_run, dict):
            net_of_run = {"profile": "none" if net_of_run in (None, "loopback") else net_of_run}
        emulated = net_of_run.get("profile", "none") != "none"
        for key, maker in ROW_MAKERS.items():
            if res.get(key) and not emulated:  # plain rows come from the un-emulated runs
                lines += maker(res, f.name)
        parts = dict(res.get("modes", {}))
        parts.update({k: v for k, v in res.items() if isinstance(v, dict) and "rows" in v})
        for key, part in parts.items():
            net = part.get("net") if isinstance(part.get("net"), dict) else {}
            measured = (
                f"measured RTT {net['rtt_ms_measured']:.2f} ms, {net['bandwidth_mbit_measured']:.0f} Mbit/s"
                if net.get("rtt_ms_measured")
                else ""
            )
            for r in part.get("rows", []):  # modes and workloads contribute ready rows
                cells = [str(c) for c in r[:5]] + [""] * (5 - len(r[:5]))
                if measured:
                    cells[4] = f"{cells[4]}, {measured}" if cells[4] else measured
                cells[4] = f"{cells[4]}, `{f.name}`" if cells[4] else f"`{f.name}`"
                lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update(readme: Path, table: str) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} lacks the {START} / {END} markers")
    new = re.sub(
        re.escape(START) + ".*?" + re.escape(END),
        START + "\n" + table + "\n" + END,
        text,
        flags=re.S,
    )
    readme.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--update", type=Path, help="README to rewrite between the results markers")
    a = ap.parse_args(argv)
    table = render([f for f in a.files if not f.name.endswith("-quick.json")])
    if a.update:
        update(a.update, table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
