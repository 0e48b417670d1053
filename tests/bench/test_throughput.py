"""`privinfer bench throughput`: its arguments and the mpc refusal (the measurement itself is a
benchmark, run by hand: docs/tee.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from privinfer.bench.throughput import check_modes, parse_sessions
from privinfer.errors import InputError


def test_sessions_parse_and_refuse_bad_lists():
    assert parse_sessions("1,2,4,8,16") == [1, 2, 4, 8, 16]
    for bad in ("", "0", "1,1", "x", "65"):
        with pytest.raises(InputError):
            parse_sessions(bad)


def test_mpc_is_refused_with_not_yet():
    with pytest.raises(InputError, match="not measured yet"):
        check_modes(["mpc"])
    check_modes(["tee"])
    out = subprocess.run(
        [sys.executable, "-m", "privinfer.cli", "bench", "throughput", "--mode", "mpc"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "not measured yet" in out.stderr
