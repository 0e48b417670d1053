"""Every bad argument is refused before a model loads: exit 2, one sentence naming the flag as
typed, no traceback, and privinfer.api.load (through which every command loads) never called;
and (once the mode plug-ins import lazily) well under 2 s without torch."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.helpers import run_probe

BAD = [
    (("generate", "hi", "--max-tokens", "0"), "--max-tokens must be at least 1"),
    (("generate", "hi", "--temperature", "-1"), "--temperature must be a finite number >= 0"),
    (("generate", "hi", "--temperature", "nan"), "--temperature must be a finite number >= 0"),
    (("generate", "hi", "--temperature", "inf"), "--temperature must be a finite number >= 0"),
    (("generate", "hi", "--top-p", "2"), "--top-p must be a number in (0, 1]"),
    (("generate", "hi", "--top-p", "0"), "--top-p must be a number in (0, 1]"),
    (("generate", "hi", "--top-p", "nan"), "--top-p must be a number in (0, 1]"),
    (("generate", "hi", "--seed", str(2**63)), "--seed must be between 0 and 2**63-1"),
    (("generate", "hi", "--seed", "-1"), "--seed must be between 0 and 2**63-1"),
    (("generate", "  "), "the prompt is empty"),
    (("generate", "hi", "--threads", "0"), "--threads must be at least 1"),
    (("generate", "hi", "--mode", "mpc", "--cluster", "/nonexistent/cluster.toml"), "--cluster"),
    (
        ("generate", "hi", "--mode", "mpc", "--server", "http://x"),
        "mode mpc does not take --server",
    ),
    (("generate", "hi", "--cluster", "c.toml"), "mode plain does not take --cluster"),
    (("embed", "a", " "), "text 2 is empty"),
    (("embed", "a", "--server", "h:1"), "mode plain does not take --server"),
    (("bench", "--runs", "0"), "--runs must be at least 1"),
    (("security", "--mode", "mpc", "--threads", "0"), "--threads must be at least 1"),
    (("check", "hi", "--frac-bits", "40"), "--frac-bits must lie in [12, 24]"),
    (("check", "hi", "--tokens", "0"), "--tokens must be at least 1"),
    (("mpc", "party", "--id", "3", "--cluster", "c.toml"), "--id must be 0, 1 or 2"),
    (("mpc", "share-model", "--frac-bits", "2"), "--frac-bits must lie in [12, 24]"),
    (("he", "serve", "--max-sessions", "0"), "--max-sessions must be at least 1"),
    (("tee", "serve", "--session-ttl", "nan"), "--session-ttl must be a finite number"),
    (("tee", "serve", "--port", "70000"), "--port must be between 0 and 65535"),
    (
        ("tee", "serve", "--enclave-user", "x", "--insecure-same-user"),
        "--enclave-user and --insecure-same-user exclude each other",
    ),
    (
        ("tee", "serve", "--max-sessions-per-client", "0"),
        "--max-sessions-per-client must be at least 1",
    ),
    (("tee", "demo", "--max-tokens", "0"), "--max-tokens must be at least 1"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_is_one_line_exit_2_before_loading(args, message):
    # --model nope would fail to load: the argument's own error must win, and nothing loads
    extra = ("--model", "nope") if args[0] in ("generate", "embed") else ()
    r, wall = run_probe(*args, *extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("privinfer: error: ")
    assert message in r.stderr and "Traceback" not in r.stderr
    assert "max_new_tokens" not in r.stderr and "top_p" not in r.stderr
    assert r.stdout.split() == ["NO-LOAD"]


def test_model_that_cannot_load_is_refused_before_loading():
    r, _ = run_probe("generate", "hi", "--model", "/nonexistent/m.gguf")
    assert r.returncode == 2 and "model file not found" in r.stderr
    assert r.stdout.split() == ["NO-LOAD"]


def test_missing_cluster_file_of_a_party(tmp_path: Path):
    r, _ = run_probe("mpc", "party", "--id", "0", "--cluster", str(tmp_path / "none.toml"))
    assert r.returncode == 2 and "--cluster" in r.stderr and "no such file" in r.stderr
    assert r.stdout.split() == ["NO-LOAD"]


@pytest.mark.parametrize("args", [a for a, _ in BAD[:6]], ids=[" ".join(a) for a, _ in BAD[:6]])
def test_argument_errors_take_well_under_two_seconds(args):
    r, wall = run_probe(*args, "--model", "nope", torch_probe=True)
    assert r.returncode == 2
    assert wall < 2.0, f"{wall:.2f} s"


def test_argument_errors_never_import_torch():
    r, _ = run_probe("generate", "hi", "--max-tokens", "0", torch_probe=True)
    assert r.returncode == 2 and r.stdout.split() == ["NO-TORCH"]
