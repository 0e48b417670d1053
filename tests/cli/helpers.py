"""Helpers for the command-line tests: run `privinfer` as a user does, in a bare environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from privinfer.net import lifetime

# Runs main() in a fresh interpreter with privinfer.api.load replaced by a tripwire (every command
# loads its model through it), then prints NO-LOAD; a load prints LOADED and exits 99.
_NO_LOAD_PROBE = (
    "import sys\n"
    "import privinfer.api\n"
    "def tripwire(*a, **k):\n"
    "    print('LOADED'); sys.exit(99)\n"
    "privinfer.api.load = tripwire\n"
    "from privinfer.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('NO-LOAD')\n"
    "sys.exit(rc)\n"
)

# Runs main() and says whether torch was imported on the way.
_TORCH_PROBE = (
    "import sys\n"
    "from privinfer.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    "sys.exit(rc)\n"
)


def env() -> dict[str, str]:
    """A bare environment, keeping PYTHONPATH so a source checkout tests its own code."""
    out = {"TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"}
    if os.environ.get("PYTHONPATH"):
        out["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return out


def run_probe(
    *args: str, torch_probe: bool = False, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    """(`privinfer ARGS` in a subprocess under a probe, its wall time in seconds)."""
    probe = _TORCH_PROBE if torch_probe else _NO_LOAD_PROBE
    t0 = time.perf_counter()
    r = lifetime.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
    )
    return r, time.perf_counter() - t0
