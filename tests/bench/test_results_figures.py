"""The stored figures: every PNG under benchmarks/results is linked from the README or docs, and
the README's overview puts every mode on one log axis."""

from __future__ import annotations

import json
from pathlib import Path

from privinfer.bench.plots import figure, overview_items

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def test_every_png_under_results_is_linked_from_readme_or_docs() -> None:
    text = (ROOT / "README.md").read_text()
    text += "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    pngs = sorted(RESULTS.rglob("*.png"))
    assert pngs
    unlinked = [p.relative_to(ROOT).as_posix() for p in pngs if p.name not in text]
    assert not unlinked, f"PNGs nobody links (link them or delete them): {unlinked}"
    for p in pngs:  # linked by a path that resolves from the README or from docs/
        rel = p.relative_to(ROOT).as_posix()
        assert rel in text or f"../{rel}" in text, rel


def test_overview_has_every_mode_on_a_log_axis() -> None:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    items = dict(overview_items(results))
    assert {"plain", "tee", "mpc", "he"} <= set(items), items
    assert items["plain"] < 0.1 < items["mpc"] < items["he"]
    fig = figure([(list(items.items()), "latency per token (s)", None)], "t")
    assert fig.axes[0].get_yscale() == "log"
    readme = (ROOT / "README.md").read_text()
    assert "latency-all-modes.png" in readme


def test_a_latency_panel_is_logarithmic_even_when_values_span_less_than_100x() -> None:
    fig = figure(
        [([("plain", 0.035), ("tee", 0.036), ("mpc", 2.06)], "latency per token (s)", None)], "t"
    )
    assert fig.axes[0].get_yscale() == "log"
