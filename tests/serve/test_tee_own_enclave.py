"""`privinfer serve --mode tee` with no --server starts its own enclave host (tee.local) and,
when the proxy is SIGKILLed, that host gets SIGTERM from the kernel, stops its enclave and removes
its socket folder: nothing outlives the proxy, nothing is left in the temp folder."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from .conftest import Proxy


def enclave_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("privinfer-enclave-*"))


@pytest.mark.timeout(600)
def test_own_enclave_answers_and_goes_with_a_killed_proxy(tmp_path: Path) -> None:
    before = enclave_dirs()
    proxy = Proxy(["--mode", "tee", "--embed-model", "none"], tmp_path)
    try:
        cmdlines = [" ".join(p.cmdline()) for p in proxy.children]
        assert any("tee serve" in c for c in cmdlines), cmdlines
        assert any("privinfer.tee.enclave" in c for c in cmdlines), cmdlines
        assert enclave_dirs() - before  # the host's socket folder exists while it serves
        out = proxy.client().chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=3,
            temperature=0,
        )
        assert out.choices[0].message.content and out.system_fingerprint
    finally:
        proxy.proc.send_signal(signal.SIGKILL)
        proxy.proc.wait()
        proxy.stop()
    gone, alive = psutil.wait_procs(proxy.children, timeout=30)
    assert not alive, [p.pid for p in alive]
    deadline = time.monotonic() + 10
    while enclave_dirs() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not enclave_dirs() - before
