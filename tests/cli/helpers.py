"""Helpers for the command-line tests: run `privinfer` as a user does, or in this process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

# Runs main() in a fresh interpreter, then says whether the model API or a model loader was
# ever imported (no model can load without them) and whether torch was.
_PROBE = (
    "import sys\n"
    "from privinfer.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "loaders = ('privinfer.api', 'privinfer.models.gguf_loader', 'privinfer.models.hf_loader')\n"
    "print('API-IMPORTED' if any(m in sys.modules for m in loaders) else 'NO-API')\n"
    "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    "sys.exit(rc)\n"
)


def env() -> dict[str, str]:
    """A bare environment, keeping PYTHONPATH so a source checkout tests its own code."""
    out = {"TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"}
    if os.environ.get("PYTHONPATH"):
        out["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return out


def run_probe(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    """(`privinfer ARGS` in a subprocess, its wall time in seconds)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
    )
    return r, time.perf_counter() - t0
