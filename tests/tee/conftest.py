"""One TEE server (enclave + host processes, default config) shared by the gateway and the
end-to-end tests: each start loads and unseals SmolLM2 in a fresh enclave, 20-40 s on a busy
2-core machine. It records what the host forwards and logs, for the end-to-end canary test.

The fault tests (they kill the enclave) and the session tests (debug enclave, 1 s TTL) keep
servers of their own."""

from __future__ import annotations

import subprocess
import time

import pytest

from privinfer.tee.local import LocalServer


@pytest.fixture(scope="session")
def shared_tee_server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tee-shared")
    t_start = time.time()
    log = open(d / "host.log", "wb")  # noqa: SIM115 - closed below
    srv = LocalServer(
        platform_dir=d / "platform",
        data_dir=d / "data",
        root=d / "root.pem",
        threads=1,
        trace=d / "trace.bin",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        srv.start()
        srv.dir, srv.log_path, srv.t_start = d, d / "host.log", t_start  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()
        log.close()
