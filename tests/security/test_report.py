"""`privinfer security`: every mode's report renders, with content derived from real parameters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from privinfer import modes
from privinfer.security.matrix import ADVERSARIES, ASSETS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privinfer.cli", "security", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("mode", modes.names())
def test_matrix_is_complete(mode):
    threat = modes.get(mode).threat
    assert set(threat) == set(ADVERSARIES)
    assert modes.get(mode).leakage
    for row in threat.values():
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


def test_mpc_report_derives_truncation_figures_from_the_model():
    r = run("--mode", "mpc", "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)["parameters"]
    assert p["fraction_bits"] == 16 and p["ring"].startswith("Z_2^64")
    lin = p["per_op_class"]["linear"]
    # SmolLM2's 30 layers x (576 + 192 + 192 + 576 + 1536 + 1536 + 576) outputs, plus the 49,152 logits
    assert lin["truncated_elements_per_token"] == 30 * (576 * 3 + 192 * 2 + 1536 * 2) + 49152
    assert lin["max_abs_seen"] > 1000  # the massive activations are really measured
    assert p["failure_probability_per_generated_token"] == 0.0
    assert p["for_comparison_aby3_local_truncation_per_token"] > 0.0
    norm = p["per_op_class"]["norm input, row sum of squares"]
    assert norm["max_row_sum_of_squares_seen"] > 20000**2  # SmolLM2's massive activations
    assert norm["headroom_bits"] > 4


def test_mpc_report_changes_with_fraction_bits():
    a = json.loads(run("--mode", "mpc", "--json", "--frac-bits", "16").stdout)["parameters"]
    b = json.loads(run("--mode", "mpc", "--json", "--frac-bits", "20").stdout)["parameters"]
    assert (
        b["per_op_class"]["linear"]["headroom_bits"]
        == a["per_op_class"]["linear"]["headroom_bits"] - 8
    )


def test_he_report_computes_security_level_from_parameters():
    p = json.loads(run("--mode", "he", "--json").stdout)["parameters"]
    assert p["total_modulus_bits"] == sum(p["coeff_modulus_bits"])
    assert p["total_modulus_bits"] <= p["max_total_bits_at_128"]
    assert p["security_level_bits"] >= 128
    assert p["refresh"]["statistical_security_bits"] == 40
    cp = p["circuit_privacy"]  # derived in he.privacy.figures from the same parameters
    assert cp["flood_slot_error_std"] == 2.0**-15
    assert cp["delivered_ciphertexts"]["minilm_sentence"] == 2
    assert cp["statistical_security_bits_per_ciphertext"] == 0.0  # stated, not claimed
    assert cp["sigma_for_40_bits_per_session"]["minilm_sentence"]["slot_error_std"] > 1e6


def test_threat_model_doc_is_current():
    from pathlib import Path

    from privinfer.modes.threat_doc import render

    doc = Path(__file__).parents[2] / "docs" / "threat-model.md"
    assert doc.read_text() == render(), (
        "run: python -m privinfer.modes.threat_doc > docs/threat-model.md"
    )
