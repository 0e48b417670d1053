"""Benchmark plots: PNGs from a full and from partial/malformed results dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privinfer.bench.plots import make_plots

PNG = b"\x89PNG\r\n\x1a\n"

SAMPLE: dict[str, Any] = {
    "date": "2026-11-26",
    "machine": "2-core x86_64 CPU",
    "threads": 1,
    "plain": {"smollm2": {"prompt_tokens": 32, "prefill_s": 0.11, "decode_s_per_token": 0.046}},
    "modes": {
        "mpc": {
            "per_token_s": 12.5,
            "bytes_per_token": 7.2e8,
            "rounds_per_token": 1800,
            "max_abs_err": 0.04,
            "slowdown_vs_plain": 271.7,
        },
        "he": {
            "per_token_s": 40.0,
            "bytes_per_token": 3.1e8,
            "rounds_per_token": 90,
            "max_abs_err": 0.002,
            "slowdown_vs_plain": 869.6,
        },
        "tee": {
            "per_token_s": 0.05,
            "bytes_per_token": 2e3,
            "rounds_per_token": 1,
            "max_abs_err": 0.0,
            "slowdown_vs_plain": 1.09,
        },
    },
    "net": {"profile": "wan", "rtt_ms_measured": 20.1, "bandwidth_mbit_measured": 95.0},
}


def _valid_png(p: Path) -> bool:
    data = p.read_bytes()
    return data[:8] == PNG and len(data) > 1024


def test_all_plots_from_sample(tmp_path: Path) -> None:
    paths = make_plots(SAMPLE, tmp_path / "plots", "2026-11-26-wan")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        f"2026-11-26-wan-{s}.png" for s in ("latency", "traffic", "slowdown", "error")
    )
    assert all(_valid_png(p) for p in paths)


def test_partial_results_skip_missing_plots(tmp_path: Path) -> None:
    partial: dict[str, Any] = {
        "plain": {"per_token_s": 0.05},
        "modes": {
            "mpc": {"per_token_s": 10.0, "bytes_per_token": None, "max_abs_err": float("nan")},
            "he": "not run",
            "tee": {"error": "no enclave"},
        },
        "net": None,
        "threads": "two",
    }
    paths = make_plots(partial, tmp_path, "partial")
    # latency (plain + mpc) and slowdown (derived from per_token_s) only
    assert sorted(p.name for p in paths) == ["partial-latency.png", "partial-slowdown.png"]
    assert all(_valid_png(p) for p in paths)


def test_empty_or_malformed_results_write_nothing(tmp_path: Path) -> None:
    assert make_plots({}, tmp_path, "empty") == []
    assert make_plots({"modes": None, "plain": 3}, tmp_path, "bad") == []
    assert make_plots([], tmp_path, "list") == []  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
