"""Child processes that never outlive the process that started them.

Every launcher in privinfer (the tee host starting its enclave, the mpc launcher starting its
three parties, the he client starting a local server, the proxy starting any of these, tests
starting `privinfer ... serve`) spawns through `spawn` here, or passes `die_with_parent()` as
`preexec_fn`. On Linux the child asks the kernel (prctl PR_SET_PDEATHSIG) for SIGKILL when its
parent dies, however the parent dies, SIGKILL included; then it checks that the parent did not
die between fork and the prctl call (the documented race) and exits at once if it did.

Caveat stated by the kernel: the signal is tied to the parent *thread* that forked. Spawn from
a thread that lives as long as the child should (the main thread, or a server's own thread), not
from a short-lived worker thread. Elsewhere than Linux this is a no-op and launchers fall back to
their own stop paths.

`sigterm_as_exit` is the other half: while a launcher runs, SIGTERM unwinds it like Ctrl-C, so
its own stop path (terminate the children, delete the temp folder) runs before it exits.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent(death_signal: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `death_signal` (SIGKILL unless
    said otherwise) when this process dies.

    Call it in the parent (it records the parent's pid before the fork); the function it returns
    runs in the child between fork and exec and exits at once if the parent is already gone.
    SIGTERM suits a child that is itself a launcher with a clean-up path (the tee host removes
    its socket folder and stops its enclave); such a child must not ignore SIGTERM.
    """
    return functools.partial(_pdeathsig, os.getpid(), int(death_signal))


def die_with(parent: int) -> None:
    """In a child forked from `parent` (by pid): get SIGKILL when it dies; exit if it is gone."""
    _pdeathsig(parent)


def _pdeathsig(parent: int, death_signal: int = signal.SIGKILL) -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def spawn(
    argv: Sequence[str], *, death_signal: int = signal.SIGKILL, **kwargs: Any
) -> subprocess.Popen[Any]:
    """`subprocess.Popen(argv, **kwargs)` whose child gets `death_signal` when this process dies
    (see module doc)."""
    if "preexec_fn" in kwargs:
        raise TypeError("spawn sets preexec_fn itself")
    return subprocess.Popen(list(argv), preexec_fn=die_with_parent(death_signal), **kwargs)


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    input: Any = None,  # noqa: A002 - subprocess.run's name
    capture_output: bool = False,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` through `spawn`: the child dies with this process. On a timeout or any
    exception (KeyboardInterrupt included) the child is killed before the exception goes on."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with spawn(argv, **kwargs) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, list(argv), out, err)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


class sigterm_as_exit:  # noqa: N801 - used like a function: `with sigterm_as_exit(): ...`
    """While active, SIGTERM raises `SystemExit(143)` in the main thread, so the `finally` blocks
    and context managers that stop children and delete temp folders run (Python's default for
    SIGTERM is to die at once, skipping them; SIGINT already raises KeyboardInterrupt).

    Installs nothing outside the main thread or where a SIGTERM handler is already set (that
    handler keeps its job); restores the previous handler on exit. Re-entrant.
    """

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> sigterm_as_exit:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return self
        self._previous = signal.signal(signal.SIGTERM, _raise_exit)
        self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
