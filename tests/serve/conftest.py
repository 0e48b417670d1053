"""One `privinfer serve` process per mode under test, started from the command line as a user
would (port 0, its URL read from stdout), shared by the modules that drive it; on teardown
SIGTERM must stop it with exit 0 and leave none of the processes it started behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import psutil
import pytest

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


@pytest.fixture(scope="package")  # stopped once tests/serve is done: it holds two models
def plain_proxy(tmp_path_factory):
    proxy = Proxy(["--mode", "plain"], tmp_path_factory.mktemp("serve-plain"))
    yield proxy
    stopped_cleanly(proxy)
    assert CANARY not in proxy.log() and CANARY not in "".join(proxy.lines)


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
