"""mpc+he over real processes and mutually authenticated TLS: `privinfer mpc+he serve` (party 0)
and a client (party 1) give the plain engine's tokens; a killed peer or a malformed frame gives
a clear error within 2 s and both processes exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.procs import wait_gone

import privinfer
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder
from privinfer.net.cluster import free_ports, init_cluster
from privinfer.net.peer import PeerError
from privinfer.twopc.service import CLIENT, connect, local_server
from privinfer.twopc.session import client_generate

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = tiny_llama_config(hidden=32, layers=1, heads=2, kv_heads=1, ffn=64)
    folder = write_hf_folder(tmp_path_factory.mktemp("mpche"), cfg, tiny_llama_weights(cfg, 7))
    return str(folder), privinfer.load(str(folder))


def _server(tmp: Path, model: str, sessions: int = 1) -> tuple[subprocess.Popen, Path]:
    """`privinfer mpc+he serve` for `sessions` sessions, stderr piped; waits until ready."""
    cluster = tmp / "cluster"
    init_cluster(cluster, [f"127.0.0.1:{p}" for p in free_ports(2)])
    ready = tmp / "ready"
    cmd = [sys.executable, "-m", "privinfer.cli", "mpc+he", "serve", "--model", model]
    cmd += ["--cluster", str(cluster), "--sessions", str(sessions), "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "server did not start"
    return proc, cluster


def _error_line(proc: subprocess.Popen, start: float) -> tuple[str, float]:
    """The server's next stderr line (about a failed session) and the seconds from `start`."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    return line, time.monotonic() - start


def test_tokens_over_tls_equal_plain(tiny):
    folder, lm = tiny
    plain = lm.generate("hi", chat=False, max_new_tokens=3)
    with local_server(folder, sessions=2) as cluster:
        got = lm.generate("hi", chat=False, max_new_tokens=3, mode="mpc+he", cluster=str(cluster))
        opts = dict(mode="mpc+he", cluster=str(cluster), temperature=2.0)
        sampled = lm.generate("hi", chat=False, max_new_tokens=1, **opts)
    assert got.token_ids == plain.token_ids
    assert (
        len(sampled.token_ids) <= 1 and sampled.stats.details["mpc+he"]["client"]["sampling_noise"]
    )
    d = got.stats.details["mpc+he"]
    assert d["server"]["linear"]["rounds"] > 0 and d["client"]["argmax"]["rounds"] > 0


def test_killed_server_gives_the_client_a_clear_error_fast(tiny, tmp_path):
    folder, lm = tiny
    proc, cluster = _server(tmp_path, folder)
    party = connect(cluster, CLIENT, timeout_s=30.0)
    gen = client_generate(party, lm, [256, 87, 104], 50, (), {})
    next(gen)
    proc.send_signal(signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(PeerError, match="party 0"):
        for _ in gen:
            pass
    assert time.monotonic() - start < 2.0
    party.link.close()
    assert not wait_gone([proc.pid], 5.0)


def test_frozen_server_gives_the_client_a_clear_error_after_its_timeout(tiny, tmp_path):
    folder, lm = tiny
    proc, cluster = _server(tmp_path, folder)
    party = connect(cluster, CLIENT, timeout_s=1.5)  # heartbeats keep a busy peer alive
    gen = client_generate(party, lm, [256, 87, 104], 50, (), {})
    next(gen)
    proc.send_signal(signal.SIGSTOP)
    start = time.monotonic()
    try:
        with pytest.raises(PeerError, match="party 0: timed out"):
            for _ in gen:
                pass
        assert time.monotonic() - start < 2.0
    finally:
        proc.kill()
        proc.wait()
        party.link.close()


def test_malformed_frame_and_killed_client_end_the_session_fast(tiny, tmp_path):
    """One server for two sessions: a malformed message, then a client killed mid-session; each
    gives one stderr line naming party 1 within 2 s; then the server exits with status 1 and
    nothing more on stderr (no traceback)."""
    folder, lm = tiny
    proc, cluster = _server(tmp_path, folder, sessions=2)
    party = connect(cluster, CLIENT, timeout_s=30.0)
    party.exchange(b'{"task": "generate", "model": ' + repr(folder).replace("'", '"').encode())
    err, after_s = _error_line(proc, time.monotonic())
    assert after_s < 2.0 and "party 1: session message is not JSON" in err
    with pytest.raises(PeerError, match="party 0"):
        party.exchange(b"")
    party.link.close()

    script = str(Path(__file__).with_name("mpche_client_proc.py"))
    client = subprocess.Popen(
        [sys.executable, script, str(cluster), folder], env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert client.stdout is not None and client.stdout.readline().strip() == "up"
    time.sleep(0.5)
    client.kill()
    err, after_s = _error_line(proc, time.monotonic())
    assert after_s < 2.0 and "session 2 failed: party 1" in err
    client.wait()
    _, rest = proc.communicate(timeout=15)
    assert proc.returncode == 1 and not rest.strip(), rest


def test_bad_arguments_are_one_line_errors_before_anything_starts(tiny, capsys, tmp_path):
    from privinfer.cli.main import main

    folder, lm = tiny
    assert main(["mpc+he", "serve", "--model", folder, "--cluster", str(tmp_path)]) == 2
    sampling = ["--temperature", "1", "--top-p", "0.5"]
    assert main(["generate", "hi", "--model", folder, "--mode", "mpc+he", *sampling]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "no cluster.toml" in err[0] and "--top-p below 1 is not supported" in err[-1]
    assert all(e.startswith(("privinfer: error: ", "loading", "loaded")) for e in err), err
