"""`privinfer security`: every mode's report renders, with content derived from real parameters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from privinfer.security.matrix import ADVERSARIES, ASSETS, MATRIX


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privinfer.cli", "security", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("mode", sorted(MATRIX))
def test_matrix_is_complete(mode):
    assert set(MATRIX[mode]) == set(ADVERSARIES)
    for row in MATRIX[mode].values():
        assert set(row) == set(ASSETS)
        assert all(c.protected in ("yes", "no", "partly", "n/a") for c in row.values())


def test_tee_report_shows_policy_and_unappraised_items():
    r = run("--mode", "tee", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["parameters"]["policy_in_force"]["allow_debug"] is False
    assert any(
        "hardware root of trust" in x
        for x in rep["parameters"]["not_appraised"]["software platform"]
    )
    assert rep["threat_matrix"]["host operator"]["prompt"]["protected"] == "yes"
    assert rep["threat_matrix"]["network observer"]["metadata"]["protected"] == "no"


def test_plain_report_protects_nothing():
    rep = json.loads(run("--mode", "plain", "--json").stdout)
    cells = [c for row in rep["threat_matrix"].values() for c in row.values()]
    assert all(c["protected"] in ("no", "n/a") for c in cells)


def test_text_report_renders_matrix():
    r = run("--mode", "tee")
    assert r.returncode == 0
    assert "| adversary | prompt | weights | output | metadata |" in r.stdout
