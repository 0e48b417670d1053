"""`privinfer bench --quick` end to end: JSON, table and plots written, content checked (not timings)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from privinfer.net import lifetime


@pytest.mark.slow
@pytest.mark.timeout(1200)  # one process loads SmolLM2 and starts a TEE server: minutes at load 7
def test_bench_quick_plain_and_tee(tmp_path):
    r = lifetime.run(
        [
            sys.executable,
            "-m",
            "privinfer.cli",
            "bench",
            "--quick",
            "--mode",
            "tee",
            "--no-reference",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,  # a hang bound that a machine loaded to 7 does not reach
        env={"PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1"}
        | ({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["threads"] == 1 and out["quick"] is True
    s = out["plain"]["smollm2"]
    assert s["prompt_tokens"] == 32 and s["prefill_s"] > 0 and s["decode_s_per_token"] > 0
    tee = out["modes"]["tee"]
    assert tee["attest_handshake_s_median"] > 0
    assert tee["decode_ratio_tee_over_plain"] > 0
    written = out["written"]
    assert any(w.endswith(".json") for w in written)
    assert any(w.endswith("-latency.png") for w in written)
    table = lifetime.run(
        [
            sys.executable,
            "-c",
            (
                "import sys; from pathlib import Path; from privinfer.bench.table import render; "
                "print(render([Path(sys.argv[1])]))"
            ),
            written[0],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| tee | attestation + handshake |" in table
    assert "| plain | SmolLM2-135M decode, per token |" in table


def test_unknown_workload_is_one_line(tmp_path):
    r = lifetime.run(
        [sys.executable, "-m", "privinfer.cli", "bench", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "unknown workload 'nope'" in r.stderr and "Traceback" not in r.stderr


def test_zero_steps_is_refused(tmp_path):
    r = lifetime.run(
        [sys.executable, "-m", "privinfer.cli", "bench", "--steps", "0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "--steps must be at least 1" in r.stderr and "Traceback" not in r.stderr


def test_a_mode_is_refused_by_a_workload_its_plug_in_does_not_list():
    from privinfer.bench.runner import check_modes_measured
    from privinfer.errors import InputError

    check_modes_measured("generate", ["plain", "tee", "mpc", "he"])
    check_modes_measured("mpc-ops", ["plain", "mpc"])
    with pytest.raises(InputError, match="workload he-ops does not measure mode tee"):
        check_modes_measured("he-ops", ["tee"])
