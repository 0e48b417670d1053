"""The `privinfer` command end to end, as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from privinfer.net import lifetime


def user_env() -> dict[str, str]:
    """A user's bare environment, but with the caller's PYTHONPATH: a test run against a source
    tree (PYTHONPATH=src) must run that tree's CLI, not whatever the venv's install points at."""
    env = {"TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return lifetime.run(
        [sys.executable, "-m", "privinfer.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_env(),
    )


def test_generate_streams_paris():
    r = run("generate", "What is the capital of France?", "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert "loading smollm2-135m" in r.stderr


def test_generate_json_reports_timings():
    r = run("generate", "Say hi.", "--max-tokens", "4", "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in (
        "prefill_s",
        "per_token_s_median",
        "tokens_per_s",
        "peak_rss_mb",
        "prompt_tokens",
        "text",
    ):
        assert key in out
    assert out["threads"] == 1
    assert out["new_tokens"] <= 4


def test_embed_prints_dimension_and_cosine():
    r = run("embed", "--model", "minilm-l6", "The cat sits on the mat.", "A feline rests on a rug.")
    assert r.returncode == 0, r.stderr
    assert "dimension: 384" in r.stdout
    cos = float(r.stdout.split("cosine(text 1, text 2):")[1].split()[0])
    assert 0.4 < cos < 0.8


def test_models_lists_both():
    r = run("models", "--json")
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows["smollm2-135m"]["path"].endswith(".gguf")
    assert rows["minilm-l6"]["path"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("generate", "hi", "--model", "nope"), "unknown model 'nope'"),
        (("generate", "  "), "the prompt is empty"),
        (("generate", "hi", "--model", "/nonexistent/m.gguf"), "model file not found"),
        (("embed", "x", "--model", "smollm2-135m"), "is a decoder"),
        (("generate", "hi", "--threads", "0"), "--threads must be at least 1"),
    ],
)
def test_user_errors_are_one_line(args, message):
    r = run(*args)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("privinfer: error:")]
    assert len(err) == 1 and message in err[0]
    assert "Traceback" not in r.stderr


def test_debug_shows_traceback():
    r = run("generate", "hi", "--model", "nope", "--debug")
    assert r.returncode != 0
    assert "Traceback" in r.stderr


def test_truncated_gguf_is_one_line(tmp_path):
    from privinfer.models.registry import MODELS, locate

    src = locate(MODELS["smollm2-135m"])
    bad = tmp_path / "cut.gguf"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(5_000_000))
    r = run("generate", "hi", "--model", str(bad))
    assert r.returncode == 2
    assert "truncated" in r.stderr and "Traceback" not in r.stderr
