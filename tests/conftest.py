"""Shared fixtures: the real models, loaded once per test session (transformers' reference copy
of SmolLM2 lives in tests/models/test_llama_reference.py, its only user), and one TEE server
(enclave + host processes, default config) for tests/tee and tests/serve: each start loads and
unseals SmolLM2 in a fresh enclave, 20-40 s on a busy 2-core machine. It records what the host
forwards and logs, for the end-to-end canary test (tests/tee/test_serve_e2e.py)."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import time

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def smollm():
    import privinfer

    return privinfer.load("smollm2-135m")


@pytest.fixture(scope="session")
def minilm():
    import privinfer

    return privinfer.load("minilm-l6")


@pytest.fixture(scope="session")
def shared_tee_server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tee-shared")
    t_start = time.time()
    log = open(d / "host.log", "wb")  # noqa: SIM115 - closed below
    from privinfer.tee.local import LocalServer

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


# Tests whose processes hold the most memory run first, while this process is still small. Run
# late, on top of the ~8 GB this process holds by then (session fixtures, HE keys), the three
# real-SmolLM2 mpc parties (~2.7-2.9 GB each; 9.4 GB used alone) took the machine to 16.2 GB
# in CI, and the tee+he server, enclave and two HE sessions (6.1 GB alone) to 14.1 GB.
RUN_FIRST = (
    "tests/mpc/test_deploy_cli.py::test_real_smollm2_greedy_equals_plain",
    "tests/teehe/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def late(item: pytest.Item) -> bool:
        return not any(item.nodeid.startswith(first) for first in RUN_FIRST)

    items.sort(key=late)  # stable: each group keeps its order, so module fixtures start once


@pytest.fixture(autouse=True, scope="module")
def _give_memory_back():
    """After each module, hand freed memory back to the OS: the suite runs in one process, and
    the heavy modules (three MPC parties as threads, whole models under HE) leave gigabytes of
    freed-but-held heap that would otherwise add up past the machine's memory (measured: 7.5 GB
    held after the mpc fidelity module without the trim, 0.88 GB with it)."""
    yield
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
    if os.environ.get("PRIVINFER_TEST_RSS"):
        with open(f"/proc/{os.getpid()}/status") as f:
            rss = next(line for line in f if line.startswith("VmRSS"))
        print(f"\n[rss after module] {rss.split()[1]} kB", flush=True)
