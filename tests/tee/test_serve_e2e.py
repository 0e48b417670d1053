"""TEE serving end to end: real enclave + host processes on 127.0.0.1, answers equal the plain engine.

One server (model loaded once, shared with the gateway tests); it also records what the host
forwards and its logs, so the canary test at the end can prove the prompt and answer never reach
them.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from privinfer.tee.client import TeeClient, TeeResult
from privinfer.tee.local import LocalServer
from privinfer.tee.protocol import TeeServerError

CANARY = "CANARY-7f3a9c"
COUNTRIES = [
    "France", "Germany", "Italy", "Spain", "Japan", "Egypt", "Canada", "Peru",
    "Kenya", "Norway", "Chile", "India", "Greece", "Poland", "Mexico", "Turkey",
]  # fmt: skip


@pytest.fixture(scope="module")
def server(shared_tee_server: LocalServer) -> LocalServer:
    return shared_tee_server  # tests/tee/conftest.py: also serves the gateway tests


@pytest.fixture(scope="module")
def client(server: LocalServer, smollm):
    with TeeClient(server.url, root_cert=server.root, model_file=smollm.source) as c:
        yield c


def plain_ids(lm, prompt: str, n: int, **kw) -> list[int]:
    """The plain engine's answer, at one torch thread (two collapse when the 2 cores are busy)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return lm.generate(prompt, max_new_tokens=n, **kw).token_ids
    finally:
        torch.set_num_threads(before)


def tee_run(client: TeeClient, prompt: str, n: int, **kw) -> TeeResult:
    res = TeeResult()
    for _ in client.generate(prompt, max_new_tokens=n, result=res, **kw):
        pass
    return res


def test_answer_is_paris_and_equals_plain(client, smollm):
    res = tee_run(client, "What is the capital of France?", 12)
    assert "Paris" in res.text
    assert res.token_ids == plain_ids(smollm, "What is the capital of France?", 12)
    assert res.claims is not None and not res.claims.debug
    assert res.attest_s > 0 and res.handshake_s > 0 and res.enclave["prompt_tokens"] > 0


def test_seeded_sampling_equals_plain(client, smollm):
    kw = {"temperature": 0.9, "top_p": 0.95, "seed": 11}
    res = tee_run(client, "Write a word about the sea.", 8, **kw)
    assert res.token_ids == plain_ids(smollm, "Write a word about the sea.", 8, **kw)


def test_sixteen_concurrent_sessions_no_crosstalk(client, smollm):
    prompts = [f"The capital of {c} is" for c in COUNTRIES]  # raw prompts: short prefill
    sessions = [client.attest() for _ in prompts]  # 16 live sessions at once
    results: dict[int, TeeResult] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(prompts))

    def work(i: int) -> None:
        try:
            res = TeeResult()
            barrier.wait()
            req = {"prompt": prompts[i], "chat": False, "max_new_tokens": 4}
            for _ in sessions[i].stream(req, res):
                pass
            results[i] = res
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    print(f"16 concurrent sessions: {time.perf_counter() - t0:.1f} s")
    for s in sessions:
        s.close()
    assert not errors, errors
    assert len(results) == 16
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        assert results[i].token_ids == plain_ids(smollm, p, 4, chat=False), p
    print(f"plain references: {time.perf_counter() - t0:.1f} s")


def test_session_serves_several_requests_then_closes(client, smollm):
    s = client.attest()
    a, b = TeeResult(), TeeResult()
    for _ in s.stream({"prompt": "Say hi.", "max_new_tokens": 3}, a):
        pass
    for _ in s.stream({"prompt": "What is the capital of Spain?", "max_new_tokens": 4}, b):
        pass
    assert b.token_ids == plain_ids(smollm, "What is the capital of Spain?", 4)
    s.close()
    with pytest.raises(TeeServerError) as e:
        for _ in s.stream({"prompt": "Say hi.", "max_new_tokens": 2}):
            pass
    assert e.value.status == 404


def test_python_api_mode_tee(server, smollm):
    stream = smollm.stream(
        "What is the capital of France?", mode="tee", server=server.url, root_cert=server.root,
        max_new_tokens=8,
    )  # fmt: skip
    text = "".join(stream)
    assert "Paris" in text
    assert stream.token_ids == plain_ids(smollm, "What is the capital of France?", 8)
    st = stream.result.stats
    n = len(stream.token_ids)
    assert st.new_tokens == n and len(st.token_s) == n - 1 and st.prefill_s > 0
    assert st.stop_reason == ("length" if n == 8 else "eos")


def test_cli_generate_and_attest(server):
    env = dict(os.environ, PRIVINFER_TEE_ROOT=str(server.root))
    cmd = [sys.executable, "-m", "privinfer.cli"]
    out = subprocess.run(
        [*cmd, "generate", "--mode", "tee", "--server", server.url, "--max-tokens", "8",
         "What is the capital of France?"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout and "Paris" not in out.stderr
    assert "attested privinfer-software-v1" in out.stderr and "debug off" in out.stderr
    att = subprocess.run(
        [*cmd, "tee", "attest", "--server", server.url, "--root", str(server.root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert att.returncode == 0, att.stderr
    assert "NOT checked hardware root of trust" in att.stdout


def _variants(s: str) -> list[bytes]:
    b = s.encode()
    return [b, b.hex().encode(), base64.b64encode(b)[:-4], s.encode("utf-16-le")]


def test_canary_never_leaves_the_enclave(server, client):
    """The canary prompt and its answer are in no host log, forwarded byte, file, error or metric."""
    prompt = f"Please repeat this code exactly: {CANARY}"
    res = tee_run(client, prompt, 24)
    answer = res.text.strip()
    # errors mentioning the request must not echo it either (encrypted input error)
    with pytest.raises(Exception) as exc:  # noqa: PT011
        tee_run(client, prompt, 4, temperature=-1.0)
    assert CANARY not in str(exc.value)
    with pytest.raises(Exception) as exc:  # noqa: PT011
        tee_run(client, CANARY * 3000, 4)  # longer than the context
    assert CANARY not in str(exc.value)
    import httpx

    metrics = httpx.get(server.url + "/metrics").text
    health = httpx.get(server.url + "/healthz").text
    needles = _variants(CANARY) + ([answer.encode()] if len(answer) >= 8 else [])
    haystacks: dict[str, bytes] = {"metrics": metrics.encode(), "healthz": health.encode()}
    haystacks["host log"] = server.log_path.read_bytes()
    trace = (server.dir / "trace.bin").read_bytes()
    assert len(trace) > 1000  # the host did forward the traffic
    haystacks["forwarded traffic"] = trace
    for root in (server.dir, Path("/tmp")):
        for p in root.rglob("*"):
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= server.t_start - 1:
                    if p.name == "trace.bin" or p.stat().st_size > 200 << 20:
                        continue
                    haystacks[str(p)] = p.read_bytes()
            except OSError:
                continue
    for name, data in haystacks.items():
        for n in needles:
            assert n not in data, f"canary found in {name}"
