"""Starts three local MPC party processes on loopback for one session (a demo and test harness;
the launching process is the model owner and the client, so it proves process isolation and
the protocol, not separate trust domains).

It writes a throwaway cluster (3 parties + the client as endpoint 3, fresh CA), shares the
model into one 0700 store per party, starts `python -m privinfer.mpc.party_main` for each
party, waits until every party has loaded its store, and on exit stops the parties and deletes
the folder (stores included).

The parties are spawned through `net.lifetime`: if the launching process dies, however (SIGKILL
included), the kernel kills them. While the cluster runs, SIGTERM in the launcher raises
SystemExit like Ctrl-C raises KeyboardInterrupt, so `stop` runs on both: the parties get SIGTERM
and the folder is deleted. Only a SIGKILLed launcher leaves its `privinfer-mpc-*` folder behind
(its parties are gone all the same).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from privinfer.errors import PrivinferError
from privinfer.mpc.runtime import N_PARTIES
from privinfer.mpc.session import MpcSessionError
from privinfer.mpc.store import share_model
from privinfer.net.cluster import free_ports, init_cluster
from privinfer.net.lifetime import sigterm_as_exit, spawn

ProgressFn = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    sys.stderr.write(f"mpc: {msg}\n")
    sys.stderr.flush()


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class LocalCluster:
    """Three party processes serving `sessions` sessions of `model` on loopback."""

    def __init__(
        self,
        model: Any,
        model_id: str,
        *,
        sessions: int = 1,
        progress: ProgressFn | None = stderr_progress,
        ready_timeout_s: float = 300.0,
        party_timeout_s: float = 120.0,
        threads: int = 1,
    ) -> None:
        self.model, self.model_id = model, model_id
        self.sessions = sessions
        self.progress = progress or (lambda _msg: None)
        self.ready_timeout_s = ready_timeout_s
        self.party_timeout_s = party_timeout_s
        self.threads = threads
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dir: Path | None = None
        self.cluster_path: Path | None = None
        self.share_set: str | None = None
        self._sigterm = sigterm_as_exit()

    def log_path(self, pid: int) -> Path:
        assert self.dir is not None
        return self.dir / f"party-{pid}.log"

    def start(self) -> LocalCluster:
        self._sigterm.__enter__()
        self.dir = Path(tempfile.mkdtemp(prefix="privinfer-mpc-"))
        hosts = [f"127.0.0.1:{p}" for p in free_ports(N_PARTIES + 1)]
        cluster = init_cluster(self.dir / "cluster", hosts)
        self.cluster_path = cluster.path
        self.progress(f"sharing {self.model_id} into 3 party stores (no party sees a weight)")
        t0 = time.perf_counter()
        self.share_set = share_model(
            self.model, self.model_id, self.dir / "stores", cluster_id=cluster.cluster_id
        )
        self.progress(f"shared in {time.perf_counter() - t0:.1f} s; starting 3 party processes")
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        for pid in range(N_PARTIES):
            cmd = [
                sys.executable,
                "-m",
                "privinfer.mpc.party_main",
                "--id",
                str(pid),
                "--cluster",
                str(self.cluster_path),
                "--store",
                str(self.dir / "stores" / f"party-{pid}"),
                "--sessions",
                str(self.sessions),
                "--idle-timeout",
                str(self.ready_timeout_s),
                "--timeout",
                str(self.party_timeout_s),
                "--threads",
                str(self.threads),
                "--ready-file",
                str(self.dir / f"party-{pid}.ready"),
            ]
            with open(self.log_path(pid), "wb") as logf:
                self.procs.append(spawn(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env))
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.dir is not None
        deadline = time.monotonic() + self.ready_timeout_s
        pending = set(range(N_PARTIES))
        while pending:
            for pid in sorted(pending):
                if (self.dir / f"party-{pid}.ready").exists():
                    pending.discard(pid)
                    self.progress(f"party {pid} ready (pid {self.procs[pid].pid})")
                elif self.procs[pid].poll() is not None:
                    raise MpcSessionError(self.failure(pid) or f"party {pid} exited at start.")
            if pending and time.monotonic() > deadline:
                raise MpcSessionError("the MPC parties did not start in time.")
            if pending:
                time.sleep(0.05)

    def failure(self, pid: int) -> str:
        """The one-line error a party printed, if any."""
        line = last_line(self.log_path(pid))
        return line.split("error: ", 1)[1] if "error: " in line else ""

    def stop(self, grace_s: float = 5.0) -> list[int | None]:
        """Wait briefly for the parties to finish, then terminate/kill them, delete the folder
        and restore the launcher's SIGTERM handler; returns the parties' exit codes."""
        try:
            return self._stop(grace_s)
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
            self._sigterm.__exit__()

    def _stop(self, grace_s: float) -> list[int | None]:
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.terminate()
        deadline = time.monotonic() + 10.0  # a terminated party closes its links and exits;
        for p in self.procs:  # on a loaded machine that can take seconds
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return [p.returncode for p in self.procs]

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop(grace_s=0.0)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(grace_s=5.0 if exc is None else 0.5)


def check_model_id(model_id: str) -> str:
    if not model_id or "\n" in model_id:
        raise PrivinferError("the model id must be a non-empty single line.")
    return model_id
