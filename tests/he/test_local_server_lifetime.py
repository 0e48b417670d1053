"""The he client's local server (`he.client.local_server`, tiny LLaMA) never outlives the process
that started it: SIGKILL that process and the kernel kills the server; SIGTERM it and it stops
the server and deletes its `privinfer-he-*` folder. Both launchers run at once."""

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
import json, os, sys, time
sys.path.insert(0, {src!r})
from privinfer.he.client import local_server
with local_server({model!r}, 1, ready_timeout_s=120) as (cluster, host, port):
    me = os.getpid()
    kids = open(f"/proc/{{me}}/task/{{me}}/children").read().split()
    print(json.dumps({{"server": [int(k) for k in kids], "dir": str(cluster.path.parent.parent)}}), flush=True)
    time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_local_server_dies_with_a_killed_launcher_and_a_terminated_one_cleans_up(
    tmp_path: Path,
) -> None:
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
            assert len(got["server"]) == 1 and alive(got["server"][0])
            assert Path(got["dir"]).name.startswith("privinfer-he-"), got["dir"]
            assert Path(got["dir"]).is_dir()

        killed, termed = launchers
        os.kill(killed.pid, signal.SIGKILL)
        os.kill(termed.pid, signal.SIGTERM)
        assert killed.wait(10) == -signal.SIGKILL
        assert not wait_gone(info[0]["server"], 5.0), "the server outlived a SIGKILLed launcher"

        assert termed.wait(20) == 128 + signal.SIGTERM
        assert not wait_gone(info[1]["server"], 5.0), "the server outlived a SIGTERMed launcher"
        assert not Path(info[1]["dir"]).exists(), "the SIGTERMed launcher left its temp folder"
    finally:
        for p in launchers:
            if p.poll() is None:
                p.kill()
                p.wait()
