"""A child started through net.lifetime dies with its parent, even when the parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.procs import alive

from privinfer.net.lifetime import spawn

SRC = str(Path(__file__).resolve().parents[2] / "src")

MIDDLE = """
import sys, time
sys.path.insert(0, {src!r})
from privinfer.net.lifetime import spawn
p = spawn([sys.executable, "-c", "import time; time.sleep(120)"])
print(p.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_grandchild_dies_when_launcher_is_sigkilled() -> None:
    mid = subprocess.Popen(
        [sys.executable, "-c", MIDDLE.format(src=SRC)], stdout=subprocess.PIPE, text=True
    )
    child = int(mid.stdout.readline())
    assert alive(child)
    os.kill(mid.pid, signal.SIGKILL)
    mid.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_control_without_spawn_the_grandchild_survives() -> None:
    """The same launcher with plain Popen leaves its child running: the test above can fail."""
    code = MIDDLE.format(src=SRC).replace("spawn([", "__import__('subprocess').Popen([")
    mid = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(mid.stdout.readline())
    os.kill(mid.pid, signal.SIGKILL)
    mid.wait()
    time.sleep(0.3)
    try:
        assert alive(child)
    finally:
        os.kill(child, signal.SIGKILL)


def test_spawn_refuses_a_second_preexec() -> None:
    with pytest.raises(TypeError):
        spawn(["true"], preexec_fn=lambda: None)
