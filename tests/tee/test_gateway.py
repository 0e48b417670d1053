"""OpenAI-compatible gateway in front of a real TEE server, driven by the official `openai` client."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from privinfer.tee.client import TeeClient
from privinfer.tee.gateway import create_gateway_app
from privinfer.tee.local import LocalServer, free_port

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def plain_text(lm, n: int) -> str:
    """The plain engine's answer, at one torch thread (two collapse when the 2 cores are busy)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return lm.generate(MESSAGES, max_new_tokens=n).text
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def server(shared_tee_server: LocalServer) -> LocalServer:
    return shared_tee_server  # tests/tee/conftest.py: the end-to-end tests' server too


@pytest.fixture(scope="module")
def gateway(server):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "privinfer.cli", "tee", "gateway", "--server", server.url,
         "--root", str(server.root), "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    # the gateway's start takes longer on a busy machine: wait with a deadline, then fail
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(url + "/models", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the gateway did not come up"
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(15)


@pytest.fixture(scope="module")
def oai(gateway):
    return openai.OpenAI(base_url=gateway, api_key="not-needed-locally", max_retries=0)


def test_models(oai):
    assert [m.id for m in oai.models.list().data] == ["smollm2-135m"]


def test_chat_completion(oai, smollm):
    r = oai.chat.completions.create(model="smollm2-135m", messages=MESSAGES, max_tokens=12)
    text = r.choices[0].message.content
    assert "Paris" in text
    assert text == plain_text(smollm, 12)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0


def test_chat_completion_streaming(oai, smollm):
    stream = oai.chat.completions.create(
        model="smollm2-135m", messages=MESSAGES, max_tokens=12, stream=True
    )
    parts, finish = [], None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts) == plain_text(smollm, 12)
    assert finish in ("stop", "length")


def test_bad_request(oai):
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="smollm2-135m", messages=[], max_tokens=4)


def test_gateway_refuses_unattested_enclave(server):
    """With the wrong expected measurement the gateway answers 502 and sends no prompt."""
    client = TeeClient(server.url, root_cert=server.root, measurement=b"\x22" * 48)
    with TestClient(create_gateway_app(client)) as tc:
        r = tc.post("/v1/chat/completions", json={"model": "x", "messages": MESSAGES})
    assert r.status_code == 502
    assert "measurement-not-allowed" in r.json()["error"]["message"]


# ------------------------------------------------------------- bad numbers: 400 naming the field

BAD_BODIES = [
    ('"max_tokens": 1e400', "max_tokens"),
    ('"seed": 1e400', "seed"),
    ('"n": 1e400', "n"),
    ('"max_tokens": "abc"', "max_tokens"),
    ('"max_completion_tokens": -3', "max_completion_tokens"),
    ('"temperature": NaN', "temperature"),
    ('"temperature": -1e400', "temperature"),
    ('"top_p": 1.5', "top_p"),
    ('"seed": 1180591620717411303424', "seed"),
    ('"seed": -1', "seed"),
    ('"n": 3', "n"),
]


@pytest.fixture(scope="module")
def offline_gateway(tmp_path_factory):
    """A gateway whose TEE server does not exist: anything that gets past validation is a 502."""
    from privinfer.tee.platform import init_platform

    d = tmp_path_factory.mktemp("gw-offline")
    init_platform(d / "platform", export_root_to=d / "root.pem")
    client = TeeClient(f"http://127.0.0.1:{free_port()}", root_cert=d / "root.pem",
                       measurement=b"\x00" * 48)  # fmt: skip
    with TestClient(create_gateway_app(client)) as tc:
        yield tc


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("field", "name"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_number_is_400_naming_the_field(offline_gateway, field, name, stream):
    body = '{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], '
    body += f'"stream": {"true" if stream else "false"}, {field}}}'
    r = offline_gateway.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert name in msg.split()[0] or f"{name}=" in msg, msg
    assert msg.count(". ") == 0 and "\n" not in msg, msg


def test_good_numbers_pass_validation(offline_gateway):
    """Accepted values reach the attestation step (which fails here: no server)."""
    r = offline_gateway.post("/v1/chat/completions", json={
        "model": "m", "messages": MESSAGES, "max_tokens": 4, "seed": 2**63 - 1, "n": 1,
        "temperature": 0.7, "top_p": 1, "stop": ["\n"], "max_completion_tokens": None,
    })  # fmt: skip
    assert r.status_code == 502, r.text


def test_streamed_refusal_comes_before_the_stream(server, smollm):
    """A request only the enclave can refuse (the prompt overflows the context) is a 400 before
    any SSE byte, not a 200 with a role chunk followed by an error."""
    client = TeeClient(server.url, root_cert=server.root, model_file=smollm.source)
    long = [{"role": "user", "content": " hello" * 9000}]
    with TestClient(create_gateway_app(client)) as tc:
        for stream in (True, False):
            r = tc.post("/v1/chat/completions",
                        json={"model": "m", "messages": long, "max_tokens": 2, "stream": stream})  # fmt: skip
            assert r.status_code == 400, r.text
            assert r.json()["error"]["message"].startswith("the prompt has")  # the enclave's
            assert "context" in r.json()["error"]["message"]
        r = tc.post("/v1/chat/completions",
                    json={"model": "m", "messages": MESSAGES, "max_tokens": 3, "stream": True})  # fmt: skip
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text
    client.close()
