"""The tee mode's host rows follow from the platform and the user separation in use (issue 13):
software with the enclave under its own user, software with `--insecure-same-user`, and TDX
print different, correct rows, from `privinfer security` and from the mode plug-in alike."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from privinfer.modes.tee import tee_threat
from privinfer.security.matrix import ADVERSARIES, ASSETS

HIDDEN = ("prompt", "weights", "output")


def security(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privinfer.cli", "security", "--mode", "tee", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("platform", "same_user"), [("software", False), ("software", True), ("tdx", False)]
)
def test_rows_are_complete(platform: str, same_user: bool) -> None:
    rows = tee_threat(platform, same_user=same_user)
    assert set(rows) == set(ADVERSARIES) and all(set(r) == set(ASSETS) for r in rows.values())


def test_software_platform_protects_the_host_only_across_users() -> None:
    own = tee_threat("software")["host operator"]
    same = tee_threat("software", same_user=True)
    for asset in HIDDEN:
        assert own[asset].protected == "yes" and "another user" in own[asset].assumption
        assert same["host operator"][asset].protected == "no"
        assert "one OS user" in same["host operator"][asset].mechanism
    assert same["the server"]["prompt"].protected == "no"


def test_hardware_platform_rows_name_the_cpu_not_users() -> None:
    tdx = tee_threat("tdx")["host operator"]["prompt"]
    assert tdx.protected == "yes" and "TDX" in tdx.mechanism and "user" not in tdx.assumption
    # hardware isolation does not depend on OS users
    assert tee_threat("tdx", same_user=True) == tee_threat("tdx")


def test_cli_prints_the_rows_of_the_platform_in_use() -> None:
    out = {}
    for name, args in {
        "software": (),
        "same": ("--insecure-same-user",),
        "tdx": ("--platform", "tdx"),
    }.items():
        r = security(*args, "--json")
        assert r.returncode == 0, r.stderr
        out[name] = json.loads(r.stdout)
    host = {k: v["threat_matrix"]["host operator"]["prompt"] for k, v in out.items()}
    assert host["software"]["protected"] == "yes" and host["tdx"]["protected"] == "yes"
    assert host["same"]["protected"] == "no"
    assert host["software"]["mechanism"] != host["tdx"]["mechanism"]
    assert out["tdx"]["parameters"]["platform"] == "tdx"
    assert out["same"]["parameters"]["host_isolation"].startswith("NONE")


def test_platform_flags_belong_to_tee() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "privinfer.cli", "security", "--mode", "mpc", "--platform", "tdx"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "tee mode only" in r.stderr
