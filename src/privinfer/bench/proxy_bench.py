"""Proxy benchmark: what `privinfer serve` adds per token, and its time to first token per mode.

Per-token overhead (plain, tee): the same greedy request, interleaved run by run, once calling
the mode directly (`LanguageModel.stream`, the mode's own client-side per-token times) and once
through a `privinfer serve` process (the openai client streaming `/v1/completions`, time between
the chunks of successive tokens as they arrive). tee talks to one local software-platform enclave
shared by both paths, so both attest the same server. Medians over runs of the per-run medians.

Time to first token: request sent -> first token's chunk received, through the proxy, one run
per mode (plain, tee: the median of the runs above; mpc: three local parties, one run after a
warm-up request). he is not measured (`ttft_modes` would take it): one SmolLM2 token takes
14-18 minutes under CKKS on the 2-core machine, and the README row says so.

Security assumption: none beyond each mode's own; every server here is a local throw-away one.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import privinfer
from privinfer.bench.plain import PROMPT_32
from privinfer.net.lifetime import spawn

MODEL = "smollm2-135m"
TARGET_TEE_OVERHEAD = 1.05

Say = Callable[[str], None]


class ProxyProcess:
    """`privinfer serve` as a user starts it (port 0; its URL read from stdout)."""

    def __init__(self, mode: str, args: list[str], threads: int, log: Path) -> None:
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = spawn(
            [sys.executable, "-m", "privinfer.cli", "serve", "--mode", mode, "--port", "0",
             "--threads", str(threads), "--model", MODEL, "--embed-model", "none", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )  # fmt: skip
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if "listening on" in line and not self.url:
                    self.url = line.split("listening on ")[1].split()[0]
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 900
        while not ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"privinfer serve --mode {mode} did not start; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def proxy(mode: str, args: list[str], threads: int, log: Path) -> Iterator[ProxyProcess]:
    p = ProxyProcess(mode, args, threads, log)
    try:
        yield p
    finally:
        p.stop()


def through_proxy(url: str, max_tokens: int) -> dict[str, Any]:
    """One streamed greedy completion: time to the first token's chunk, and the times between
    the chunks of successive tokens (each token's chunk carries `privinfer.tokens`)."""
    import openai

    oai = openai.OpenAI(base_url=url + "/v1", api_key="local", max_retries=0, timeout=3600)
    t0 = time.perf_counter()
    stream = oai.completions.create(
        model=MODEL, prompt=PROMPT_32, max_tokens=max_tokens, temperature=0.0, stream=True
    )
    arrivals: list[float] = []
    mode_token_s: list[float] = []
    for chunk in stream:
        now = time.perf_counter()
        extra = (chunk.model_extra or {}).get("privinfer") or {}
        if "tokens" in extra and extra["tokens"] == len(arrivals) + 1:
            arrivals.append(now)
            if extra["tokens"] > 1:
                mode_token_s.append(float(extra["token_s"]))
    if not arrivals:
        raise RuntimeError("the proxy streamed no token")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return {"ttft_s": arrivals[0] - t0, "token_s": gaps, "mode_token_s": mode_token_s}


def direct(lm: Any, mode: str, max_tokens: int, **opts: Any) -> dict[str, Any]:
    """The same completion through `LanguageModel.stream`: the mode's client-side times."""
    t0 = time.perf_counter()
    s = lm.stream(PROMPT_32, mode=mode, chat=False, max_new_tokens=max_tokens, **opts)
    for _ in s:
        pass
    assert s.result is not None
    st = s.result.stats
    return {"ttft_s": time.perf_counter() - t0 - sum(st.token_s), "token_s": list(st.token_s)}


def _per_token(run: dict[str, Any], steps: int) -> float:
    if len(run["token_s"]) < steps:
        raise RuntimeError("the benchmark prompt stopped early")
    return statistics.median(run["token_s"])


def bench_proxy(
    runs: int = 5,
    decode_steps: int = 16,
    *,
    ttft_modes: tuple[str, ...] = ("mpc",),
    progress: Say | None = None,
) -> dict[str, Any]:
    """Direct vs proxy per-token medians for plain and tee; TTFT through the proxy per mode."""
    from privinfer.tee.local import LocalServer

    say = progress or (lambda _m: None)
    threads = torch.get_num_threads()
    med = statistics.median
    tmp = Path(tempfile.mkdtemp(prefix="privinfer-bench-proxy-"))
    n = decode_steps + 1
    out: dict[str, Any] = {"threads": threads, "runs": runs, "decode_steps": decode_steps,
                           "model": MODEL, "overhead": {}, "ttft_s": {}}  # fmt: skip
    srv = LocalServer(platform_dir=tmp / "platform", data_dir=tmp / "data",
                      root=tmp / "root.pem", threads=threads, stdout=None)  # fmt: skip
    try:
        say("starting the enclave")
        srv.start()
        lm = privinfer.load(MODEL, threads=threads)
        out["prompt_tokens"] = len(lm.tokenizer.encode(PROMPT_32))
        tee_opts = {"server": srv.url, "root_cert": srv.root}
        with (
            proxy("plain", [], threads, tmp / "plain.log") as pp,
            proxy("tee", ["--server", srv.url, "--root", str(srv.root)], threads,
                  tmp / "tee.log") as tp,
        ):  # fmt: skip
            paths: dict[str, tuple[Callable[[], dict], Callable[[], dict]]] = {
                "plain": (lambda: direct(lm, "plain", n), lambda: through_proxy(pp.url, n)),
                "tee": (lambda: direct(lm, "tee", n, **tee_opts),
                        lambda: through_proxy(tp.url, n)),
            }  # fmt: skip
            for d, p in paths.values():  # warm-up: connections, caches, first attestation
                d(), p()
            got: dict[str, dict[str, list]] = {m: {"direct": [], "proxy": [], "ttft": [],
                                                   "mode": []} for m in paths}  # fmt: skip
            for r in range(runs):
                say(f"run {r + 1}/{runs}")
                for mode, (d, p) in paths.items():
                    a, b = d(), p()
                    got[mode]["direct"].append(_per_token(a, decode_steps))
                    got[mode]["proxy"].append(_per_token(b, decode_steps))
                    got[mode]["ttft"].append(b["ttft_s"])
                    got[mode]["mode"].append(med(b["mode_token_s"]))
        for mode, g in got.items():
            ratio = med(g["proxy"]) / med(g["direct"])
            out["overhead"][mode] = {
                "direct_per_token_s_median": round(med(g["direct"]), 6),
                "proxy_per_token_s_median": round(med(g["proxy"]), 6),
                "proxy_mode_side_per_token_s_median": round(med(g["mode"]), 6),
                "ratio_proxy_over_direct": round(ratio, 4),
                "per_run_direct": [round(x, 6) for x in g["direct"]],
                "per_run_proxy": [round(x, 6) for x in g["proxy"]],
            }
            out["ttft_s"][mode] = {"median": round(med(g["ttft"]), 6), "runs": len(g["ttft"])}
        for mode in ttft_modes:
            say(f"time to first token through the proxy, mode {mode}")
            with proxy(mode, [], threads, tmp / f"{mode}.log") as xp:
                through_proxy(xp.url, 1)  # warm-up: connections to the parties / server
                t = through_proxy(xp.url, 1)["ttft_s"]
            out["ttft_s"][mode] = {"median": round(t, 6), "runs": 1}
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    tee_ratio = out["overhead"]["tee"]["ratio_proxy_over_direct"]
    out["targets"] = {"tee_proxy_overhead_ratio": TARGET_TEE_OVERHEAD}
    out["meets_targets"] = {"tee_proxy_overhead": tee_ratio <= TARGET_TEE_OVERHEAD}
    out["rows"] = rows(out)
    return out


def rows(r: dict[str, Any]) -> list[list[str]]:
    """README rows: proxy over direct per token (plain, tee), TTFT through the proxy per mode."""
    how = (f"{r['threads']} thr, median of {r['runs']} interleaved runs, {r['decode_steps']} "
           "decode steps, `privinfer serve` process, openai client, loopback")  # fmt: skip
    out = []
    for mode, o in r["overhead"].items():
        where = ", software-platform enclave shared by both paths" if mode == "tee" else ""
        out.append([
            f"SmolLM2-135M decode per token through the proxy, mode {mode}",
            f"{o['proxy_per_token_s_median'] * 1000:.1f} ms",
            f"direct {o['direct_per_token_s_median'] * 1000:.1f} ms",
            f"{o['ratio_proxy_over_direct']:.3f}x",
            how + where + (", target <= 1.05x" if mode == "tee" else ""),
        ])  # fmt: skip
    ttft = r["ttft_s"]
    cells = ", ".join(f"{m} {_t(v['median'])}" for m, v in ttft.items())
    missing = [m for m in ("plain", "tee", "mpc", "he") if m not in ttft]
    note = (f"{r['prompt_tokens']}-token prompt, through the proxy; plain and tee: median of "
            f"{r['runs']}, mpc: 3 local parties, one run after a warm-up")  # fmt: skip
    if "he" in missing:
        note += "; he not measured here (one SmolLM2 token takes ~15-20 min under CKKS on 2 cores)"
    out.append(["SmolLM2-135M time to first token through the proxy", cells, "", "", note])
    return out


def _t(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"
