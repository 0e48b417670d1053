"""Two processes over mutually authenticated TLS (net.cluster identities for two parties), and
faults: a killed peer and a malformed message give a clear PeerError within 2 s, no hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from privinfer.net.cluster import free_ports, init_cluster
from privinfer.net.memory import MemoryNetwork
from privinfer.net.peer import PeerError
from privinfer.twopc import arith, ring
from privinfer.twopc.runtime import run_local

ROOT = Path(__file__).resolve().parents[2]
MAIN = Path(__file__).with_name("party_main.py")


def _run_pair(tmp_path: Path, mode: str) -> list[dict]:
    ports = free_ports(2)
    init_cluster(tmp_path, [f"127.0.0.1:{p}" for p in ports])
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}")
    procs = [
        subprocess.Popen(
            [sys.executable, str(MAIN), str(tmp_path), str(i), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        lines = out.strip().splitlines()
        outs.append(json.loads(lines[-1]) if lines else {"stderr": err[-500:]})
    return outs


def test_two_processes_over_tls(tmp_path):
    a, b = _run_pair(tmp_path, "ok")
    assert a == b or (a["neg_ok"] and b["neg_ok"])
    assert a["sq_err"] < 1e-3 and a["neg_ok"]


def test_killed_peer_gives_a_clear_error_fast(tmp_path):
    a, _ = _run_pair(tmp_path, "die")
    assert "party 1" in a["error"]
    assert a["after_s"] < 2.0


def test_malformed_message_gives_a_clear_error_fast():
    net = MemoryNetwork(2, timeout_s=30)

    def prog(p):  # type: ignore[no-untyped-def]
        s = ring.share_input(p, 0, np.zeros(100, np.uint64) if p.pid == 0 else None, 100)
        if p.pid == 1:
            p.link.send(0, b"\x00" * 13)  # a message of the wrong length, then silence
            return None
        return arith.mul(p, s, s)

    start = time.monotonic()
    with pytest.raises(PeerError, match="party 1: .*has the wrong length"):
        run_local(prog, links=list(net.links))
    assert time.monotonic() - start < 2.0
