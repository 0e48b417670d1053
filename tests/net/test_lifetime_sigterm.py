"""`sigterm_as_exit`: SIGTERM unwinds the process (finally blocks run, exit status 143) while
active; the previous handler is back afterwards, and a handler set by someone else is kept."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from privinfer.net.lifetime import sigterm_as_exit

SRC = str(Path(__file__).resolve().parents[2] / "src")

PROGRAM = """
import os, signal, sys, time
sys.path.insert(0, {src!r})
from privinfer.net.lifetime import sigterm_as_exit
try:
    with sigterm_as_exit():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
finally:
    print("cleaned up", flush=True)
"""


def test_sigterm_runs_finally_blocks_and_exits_143() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(src=SRC)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 128 + signal.SIGTERM
    assert done.stdout.strip() == "cleaned up"


def test_control_without_it_sigterm_skips_finally() -> None:
    code = PROGRAM.format(src=SRC).replace("with sigterm_as_exit():", "if True:")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == -signal.SIGTERM and done.stdout == ""


def test_handler_is_restored_and_a_foreign_handler_is_kept() -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with sigterm_as_exit():
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            with sigterm_as_exit():  # nested: a no-op
                pass
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        def mine(*_: object) -> None:
            pass

        signal.signal(signal.SIGTERM, mine)
        with sigterm_as_exit():
            assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_run_is_subprocess_run_whose_child_is_killed_on_timeout() -> None:
    from privinfer.net.lifetime import run

    done = run([sys.executable, "-c", "print('hi')"], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "hi\n")

    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    with pytest.raises(subprocess.TimeoutExpired):
        run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, timeout=1.0)
