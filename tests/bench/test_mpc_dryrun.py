"""The fixed-point dry run (`privinfer.bench.mpc_dryrun`): error and cost of each MPC op."""

from __future__ import annotations

import pytest

from privinfer.bench import mpc_dryrun as dryrun


@pytest.mark.parametrize("frac_bits", [16, 20])
def test_dry_run_reports_small_errors(frac_bits):
    rows = {r.op: r for r in dryrun.measure(frac_bits)}
    limits = {
        "mul": 2e-5,
        "matmul": 2e-5,
        "max": 0.0,
        "exp": 3e-5,
        "rsqrt": 3e-5,
        "silu": 2.5e-4,
        "gelu": 6e-5,
        "sigmoid": 1e-4,
        "softmax": 3e-5,
        "rms_norm": 1e-3,
        "layer_norm": 5e-3,
    }
    for op, limit in limits.items():
        assert rows[op].max_abs_error <= limit, op
    assert rows["reciprocal"].max_rel_error < 1e-4
    assert all(r.rounds > 0 and r.bytes_sent_per_party > 0 for r in rows.values())
    assert "softmax" in dryrun.format_table(frac_bits, list(rows.values()))
