"""The mpc launcher (`LocalCluster`, tiny LLaMA) never leaves its parties behind: SIGKILLed, its
three parties die with it (the kernel's parent-death signal); SIGTERMed, it stops them and
deletes its `privinfer-mpc-*` folder, and each party handles the SIGTERM it gets and exits
with 143. Both launchers run at once, to share the start-up time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.procs import alive, wait_gone

from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder

SRC = str(Path(__file__).resolve().parents[2] / "src")

LAUNCHER = """
import json, sys, time
sys.path.insert(0, {src!r})
import privinfer
from privinfer.mpc.launcher import LocalCluster
lm = privinfer.load({model!r})
c = LocalCluster(lm, "tiny", progress=None, ready_timeout_s=120).start()
try:
    print(json.dumps({{"parties": [p.pid for p in c.procs], "dir": str(c.dir)}}), flush=True)
    time.sleep(300)
finally:  # what LocalCluster.__exit__ does, keeping the parties' exit codes
    print(json.dumps({{"codes": c.stop(grace_s=0.5)}}), flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_parties_die_with_a_killed_launcher_and_a_terminated_one_cleans_up(tmp_path: Path) -> None:
    cfg = tiny_llama_config()
    model = write_hf_folder(tmp_path / "model", cfg, tiny_llama_weights(cfg, 5))
    code = LAUNCHER.format(src=SRC, model=str(model))
    launchers = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        info = [json.loads(p.stdout.readline()) for p in launchers]  # type: ignore[union-attr]
        for got in info:
            assert len(got["parties"]) == 3 and all(alive(q) for q in got["parties"])
            assert Path(got["dir"]).is_dir() and Path(got["dir"]).name.startswith("privinfer-mpc-")

        killed, termed = launchers
        os.kill(killed.pid, signal.SIGKILL)
        os.kill(termed.pid, signal.SIGTERM)
        assert killed.wait(10) == -signal.SIGKILL
        assert not wait_gone(info[0]["parties"], 5.0), "parties outlived a SIGKILLed launcher"

        assert termed.wait(20) == 128 + signal.SIGTERM  # SystemExit(143): stop() ran
        codes = json.loads(termed.stdout.read())["codes"]  # type: ignore[union-attr]
        assert codes == [128 + signal.SIGTERM] * 3  # each party handled its SIGTERM and exited
        assert not wait_gone(info[1]["parties"], 5.0), "parties outlived a SIGTERMed launcher"
        assert not Path(info[1]["dir"]).exists(), "the SIGTERMed launcher left its temp folder"
    finally:
        for p in launchers:
            if p.poll() is None:
                p.kill()
                p.wait()
