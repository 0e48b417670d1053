"""Benchmark plots (PNG via matplotlib's Agg canvas): latency, traffic, slowdown, error by mode,
and one latency overview of every mode across several result files (the README's figure).

Latency and slowdown axes are logarithmic (per-token latency spans plain's tens of milliseconds to
he's twenty minutes); the other axes turn logarithmic when their values span 100x or more.
`python -m privinfer.bench.plots benchmarks/results/*.json --out benchmarks/results` redraws
every figure from stored JSON without running a benchmark.

make_plots assumes a results dict shaped {"plain": {...}, "modes": {name: {"per_token_s", "bytes_per_token",
"rounds_per_token", "max_abs_err", "slowdown_vs_plain"}}, "net": {...}, "machine", "threads"};
any part may be missing, None or malformed: a plot without data is skipped and nothing raises on
partial input. Uses no pyplot, so it never changes the process's matplotlib backend.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["make_plots"]

_PLAIN_COLOR = "#7f7f7f"
_COLORS = {"mpc": "#1f77b4", "he": "#d62728", "tee": "#2ca02c"}
_Item = tuple[str, float]


def _num(x: Any) -> float | None:
    """A finite float, or None for anything else (bool, str, NaN, inf, None...)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _dict(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _modes(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(k): v for k, v in _dict(result.get("modes")).items() if isinstance(v, Mapping)}


def _plain_per_token(result: Mapping[str, Any]) -> float | None:
    plain = _dict(result.get("plain"))
    v = _num(plain.get("per_token_s"))
    if v is None:
        v = _num(_dict(plain.get("smollm2")).get("decode_s_per_token"))
    return v


def _series(result: Mapping[str, Any], key: str) -> list[_Item]:
    return [(name, v) for name, m in _modes(result).items() if (v := _num(m.get(key))) is not None]


def _slowdowns(result: Mapping[str, Any]) -> list[_Item]:
    base = _plain_per_token(result)
    out: list[_Item] = []
    for name, m in _modes(result).items():
        v = _num(m.get("slowdown_vs_plain"))
        t = _num(m.get("per_token_s"))
        if v is None and t is not None and base:
            v = t / base
        if v is not None:
            out.append((name, v))
    return out


def _subtitle(result: Mapping[str, Any]) -> str:
    parts: list[str] = []
    machine = result.get("machine")
    if isinstance(machine, Mapping):
        machine = next((machine[k] for k in ("name", "cpu", "host", "gpu") if machine.get(k)), None)
    if machine:
        parts.append(f"machine: {machine}")
    threads = result.get("threads")
    if _num(threads) is not None:
        parts.append(f"threads: {int(threads)}")
    net = result.get("net")
    if isinstance(net, Mapping) and net.get("profile"):
        text = f"net: {net['profile']}"
        rtt, bw = _num(net.get("rtt_ms_measured")), _num(net.get("bandwidth_mbit_measured"))
        bits = [f"RTT {rtt:.3g} ms"] if rtt is not None else []
        bits += [f"{bw:.4g} Mbit/s"] if bw is not None else []
        if bits:
            text += f" ({', '.join(bits)} measured)"
        parts.append(text)
    elif isinstance(net, str) and net:
        parts.append(f"net: {net}")
    return ", ".join(parts)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if 1e3 <= abs(v) < 1e8:
        return f"{v:,.0f}"
    if abs(v) >= 1e8 or abs(v) < 1e-2:
        return f"{v:.2e}"
    return f"{v:.3g}"


def _bars(
    ax: Axes, items: Sequence[_Item], ylabel: str, *, ref: float | None = None, log: bool = False
) -> None:
    names = [n for n, _ in items]
    vals = [v for _, v in items]
    colors = [
        _PLAIN_COLOR if n == "plain" else _COLORS.get(n.split(" (")[0], "#9467bd") for n in names
    ]
    bars = ax.bar(range(len(vals)), vals, color=colors)
    ax.set_xticks(range(len(vals)), names, fontsize=8 if len(vals) > 4 else None)
    ax.set_xlabel("mode")
    ax.set_ylabel(ylabel)
    positive = [v for v in vals if v > 0]
    if len(positive) == len(vals) and (log or max(positive) / min(positive) >= 100):
        ax.set_yscale("log")
    if ref is not None:
        ax.axhline(ref, color="black", linewidth=0.8, linestyle="--")
    for b, v in zip(bars, vals, strict=True):
        ax.annotate(
            _fmt(v),
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.grid(axis="y", alpha=0.3)


_Panel = tuple[Sequence[_Item], str, float | None]
_LOG_AXES = ("latency per token (s)", "slowdown vs plain (x, per token)")


def figure(panels: Sequence[_Panel], title: str, subtitle: str = "") -> Figure:
    """One row of bar panels (items, y label, optional reference line); latency and slowdown
    panels on a log axis."""
    width = max(7.0, 5.5 * len(panels), 1.1 * max(len(p[0]) for p in panels))
    fig = Figure(figsize=(width, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (items, ylabel, ref) in zip(axes, panels, strict=True):
        _bars(ax, items, ylabel, ref=ref, log=ylabel in _LOG_AXES)
    lines = [title, *textwrap.wrap(subtitle, width=int(width * 12))]
    fig.suptitle("\n".join(lines), fontsize=10)
    return fig


def _save(panels: Sequence[_Panel], title: str, subtitle: str, path: Path) -> Path:
    figure(panels, title, subtitle).savefig(path, format="png", dpi=110)
    return path


def make_plots(result: Mapping[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Write `<stem>-latency/-traffic/-slowdown/-error.png` into `out_dir` for the data present.

    Returns the paths written (possibly none). Never raises on missing or malformed entries.
    """
    if not isinstance(result, Mapping):
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(str(stem)).name or "bench"
    sub = _subtitle(result)

    def latency() -> list[tuple[Sequence[_Item], str, float | None]]:
        base = _plain_per_token(result)
        modes = _series(result, "per_token_s")
        items = ([("plain", base)] if base is not None else []) + modes
        return [(items, "latency per token (s)", None)] if modes else []  # plain alone: no plot

    def traffic() -> list[tuple[Sequence[_Item], str, float | None]]:
        mb = [(n, v / 1e6) for n, v in _series(result, "bytes_per_token")]
        rounds = _series(result, "rounds_per_token")
        return [
            p
            for p in ((mb, "traffic per token (MB sent)", None), (rounds, "rounds per token", None))
            if p[0]
        ]

    def slowdown() -> list[tuple[Sequence[_Item], str, float | None]]:
        items = _slowdowns(result)
        return [(items, "slowdown vs plain (x, per token)", 1.0)] if items else []

    def error() -> list[tuple[Sequence[_Item], str, float | None]]:
        items = _series(result, "max_abs_err")
        return [(items, "max |logit - plain logit| (logit units)", None)] if items else []

    plots: list[tuple[str, str, Callable[[], list[tuple[Sequence[_Item], str, float | None]]]]] = [
        ("latency", "Latency per generated token by mode", latency),
        ("traffic", "Communication per token by mode", traffic),
        ("slowdown", "Slowdown vs plain inference", slowdown),
        ("error", "Output error vs plain inference", error),
    ]
    written: list[Path] = []
    for suffix, title, panels_of in plots:
        try:
            panels = panels_of()
            if panels:
                written.append(_save(panels, title, sub, out_dir / f"{stem}-{suffix}.png"))
        except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError) as exc:
            warnings.warn(f"plot {suffix} skipped: {exc}", RuntimeWarning, stacklevel=2)
    return written


def overview_items(results: Sequence[Mapping[str, Any]]) -> list[_Item]:
    """SmolLM2 decode seconds per token of every mode found in `results` (result dicts, in
    order): plain from the first generate result that timed a mode on loopback, each timed mode
    as "mode" (loopback) or "mode (net)", he from an `he-smollm2` result; the first figure for a
    label wins. Sorted from fastest to slowest."""
    found: dict[str, float] = {}
    for result in results:
        if not isinstance(result, Mapping):
            continue
        net = _dict(result.get("net")).get("profile") or "none"
        timed = _series(result, "per_token_s")
        base = _plain_per_token(result)
        if timed and net == "none" and base is not None:
            found.setdefault("plain", base)
        for name, v in timed:
            found.setdefault(name if net == "none" else f"{name} ({net})", v)
        he = _num(_dict(result.get("he-smollm2")).get("decode_s_per_token"))
        if he is not None:
            found.setdefault("he", he)
    return sorted(found.items(), key=lambda kv: kv[1])


def make_overview(results: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """The README's figure: `overview_items` on a log axis, written to `path` (None: no data)."""
    items = overview_items(results)
    if not items:
        return None
    sub = "SmolLM2-135M, decode seconds per generated token; he: whole model, client + server"
    panels: list[_Panel] = [(items, "latency per token (s)", None)]
    return _save(panels, "Latency per generated token, every mode (log scale)", sub, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw the figures of stored result files: each file's own plots (files that timed a
    mode per token) and the all-modes overview `<latest date>-latency-all-modes.png`."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m privinfer.bench.plots", description=main.__doc__)
    ap.add_argument("files", nargs="+", type=Path, help="benchmark result JSON files")
    ap.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    args = ap.parse_args(argv)
    results = []
    for f in sorted(args.files):
        result = json.loads(f.read_text())
        results.append(result)
        if _series(result, "per_token_s"):
            for p in make_plots(result, args.out, f.stem):
                print(p)
    dates = [str(r.get("date")) for r in results if isinstance(r, Mapping) and r.get("date")]
    over = make_overview(results, args.out / f"{max(dates, default='all')}-latency-all-modes.png")
    if over is not None:
        print(over)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
