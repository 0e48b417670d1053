"""The proxies under test. mpc, he and tee run as `privinfer serve` processes started from the
command line as a user would (port 0, its URL read from stdout); on teardown SIGTERM must stop
each with exit 0 and leave none of the processes it started behind. The plain proxy, which the
HTTP-level tests share, is the same app (`run_proxy`'s `open_backend` + `create_app` + uvicorn
with its settings) in this process on a real socket, on the session's models: no second copy of
SmolLM2 and MiniLM to load, and every log record it makes is kept for the canary checks."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from privinfer.net.cluster import free_ports
from privinfer.net.lifetime import spawn

# Debian's chromium, headless, offline: no browser download, no background traffic
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--window-size=1200,800"]  # fmt: skip

CANARY = "zebra-canary-7f3a91"


class Proxy:
    def __init__(
        self,
        args: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        command: tuple[str, ...] = ("serve",),
    ) -> None:
        self.log_path = log_dir / f"{'-'.join(command)}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = spawn(
            [
                sys.executable,
                "-m",
                "privinfer.cli",
                *command,
                "--port",
                "0",
                "--threads",
                "1",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.url = ""
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "listening on" in line and not self.url:
                    self.url = line.split("listening on ")[1].split()[0]
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 240
        while not ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"privinfer serve did not start:\n{self.log()}")
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key="local", max_retries=0, **kw)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def stopped_cleanly(proxy: Proxy) -> None:
    """SIGTERM: exit 0, and every process the proxy started is gone."""
    code = proxy.stop()
    assert code == 0, proxy.log()
    gone, alive = psutil.wait_procs(proxy.children, timeout=20)
    assert not alive, [p.pid for p in alive]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")


class InProcessProxy:
    """`privinfer serve`'s app in this process on a real socket (uvicorn in a thread), with the
    settings `run_proxy` uses; `log()` is every record any logger made while it ran (privinfer's
    loggers at DEBUG, uvicorn's at the level the CLI sets)."""

    def __init__(self, url: str, records: _Records) -> None:
        self.url, self._records, self.lines = url, records, []

    v1 = Proxy.v1
    client = Proxy.client

    def log(self) -> str:
        return "\n".join(self._records.lines)


@contextlib.contextmanager
def in_process_proxy(mode: str, **kw) -> Iterator[InProcessProxy]:
    import uvicorn

    from privinfer.serve.app import create_app
    from privinfer.serve.backend import open_backend

    records = _Records()
    root = logging.getLogger()
    loggers = [logging.getLogger(n) for n in ("privinfer", "uvicorn", "fastapi")]
    levels = [lg.level for lg in loggers]
    root.addHandler(records)
    for lg in loggers[:1]:
        lg.setLevel(logging.DEBUG)
    (port,) = free_ports(1)
    try:
        with open_backend(mode, **kw) as backend:
            config = uvicorn.Config(create_app(backend), port=port, log_level="warning",
                                    access_log=False, timeout_graceful_shutdown=5)  # fmt: skip
            server = uvicorn.Server(config)
            t = threading.Thread(target=server.run, daemon=True)
            t.start()
            while not server.started:
                assert t.is_alive(), "the proxy did not start"
                time.sleep(0.05)
            yield InProcessProxy(f"http://127.0.0.1:{port}", records)
            server.should_exit = True
            t.join(30)
    finally:
        root.removeHandler(records)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@pytest.fixture(scope="package")  # stopped once tests/serve is done
def plain_proxy(smollm, minilm):
    with in_process_proxy(
        "plain", model=smollm.name, embed_model=minilm.name, options={},
        loaded={smollm.name: smollm, minilm.name: minilm},
    ) as proxy:  # fmt: skip
        yield proxy
    assert CANARY not in proxy.log()


@pytest.fixture(scope="package")
def browser():
    """Selenium on Debian's chromium + chromedriver; fails (never skips) when they are absent."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "install Debian's chromium and chromium-driver (make install-test)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    b = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    yield b
    b.quit()
