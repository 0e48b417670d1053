"""The proxy in mode plain, driven by the official `openai` client (and httpx for what the client
cannot send): chat, streaming, stop strings, seeds, n, logprobs, completions, embeddings,
models, health, metrics, and an OpenAI-shaped 400 naming the field for every invalid request."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest
import torch

from .conftest import CANARY

MODEL = "smollm2-135m"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def oai(plain_proxy):
    return plain_proxy.client()


def test_chat_equals_the_plain_api(oai, smollm):
    r = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12)
    want = smollm.generate(MESSAGES, max_new_tokens=12)
    assert r.choices[0].message.content == want.text == "The capital of France is Paris."
    assert r.choices[0].finish_reason == "stop"  # EOS
    assert r.usage.prompt_tokens == want.stats.prompt_tokens
    assert r.usage.completion_tokens == len(want.token_ids)
    assert r.system_fingerprint.startswith("fp_")
    r = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_streaming_equals_whole_and_carries_figures(oai, plain_proxy):
    whole = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
    parts, finish, figures = [], None, []
    stream = oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=8, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        extra = (chunk.model_extra or {}).get("privinfer")
        if extra:
            figures.append(extra)
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert [f["tokens"] for f in figures[:3]] == [1, 2, 3]
    assert all(f["token_s"] > 0 for f in figures)


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_across_tokens(oai, stream):
    # "Paris" is one token; "tal of Fr" spans " capital", " of" and " France"
    for stop, want in ((["Paris"], "The capital of France is "), ("tal of Fr", "The capi")):
        r = oai.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=12, stop=stop, stream=stream
        )
        if stream:
            chunks = [c for c in r if c.choices]
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
            assert finish == ["stop"]
        else:
            text = r.choices[0].message.content
            assert r.choices[0].finish_reason == "stop"
        assert text == want


def test_seed_reproducibility_and_n(oai):
    kw = dict(model=MODEL, messages=MESSAGES, max_tokens=6, temperature=1.5, seed=11)
    a = oai.chat.completions.create(**kw)
    b = oai.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    two = oai.chat.completions.create(**{**kw, "n": 2})
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content == a.choices[0].message.content  # choice i: seed + i
    assert 2 <= two.usage.completion_tokens <= 12


def test_logprobs(oai, smollm):
    r = oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 4 and "".join(t.token for t in content) == r.choices[0].message.content
    m = smollm.plain()
    with torch.inference_mode():
        want = torch.log_softmax(m.forward(smollm.prompt_ids(MESSAGES), m.new_cache(), 0)[-1], -1)
    first = content[0]
    assert len(first.top_logprobs) == 3 and first.top_logprobs[0].token == first.token  # greedy
    assert abs(first.logprob - float(want.max())) < 1e-3
    assert all(t.logprob <= 0 for t in content)


def test_completions(oai, smollm):
    r = oai.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=3)
    want = smollm.generate("The capital of France is", chat=False, max_new_tokens=3)
    assert r.choices[0].text == want.text and r.choices[0].finish_reason == "length"
    parts = [c.choices[0].text for c in oai.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=3, stream=True)]  # fmt: skip
    assert "".join(parts) == want.text


def test_embeddings_models_health_metrics(oai, plain_proxy, minilm):
    texts = ["a cat sat on the mat", "privacy-preserving inference"]
    r = oai.embeddings.create(model="minilm-l6", input=texts)
    got = torch.tensor([d.embedding for d in r.data])
    assert torch.allclose(got, minilm.embed(texts), atol=1e-5) and r.usage.prompt_tokens > 4
    b64 = oai.embeddings.create(model="minilm-l6", input=texts[0], encoding_format="base64")
    floats = struct.unpack("<384f", base64.b64decode(b64.data[0].embedding))
    assert torch.allclose(torch.tensor(floats), got[0], atol=1e-6)
    assert [m.id for m in oai.models.list().data] == [MODEL, "minilm-l6"]
    assert oai.models.retrieve(MODEL).owned_by == "privinfer-plain"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-4")
    h = httpx.get(plain_proxy.url + "/health").json()
    assert h["status"] == "ok" and h["mode"] == "plain"
    m = httpx.get(plain_proxy.url + "/metrics")
    assert m.status_code == 200 and "privinfer_completion_tokens_total" in m.text
    info = httpx.get(plain_proxy.v1 + "/privinfer/info").json()
    assert info["mode"] == "plain" and info["protection"]["protection"] == "none"
    assert httpx.get(plain_proxy.url + "/").text.startswith("<!doctype html>")


# --------------------------------------------------------------- invalid requests: 400 by field
BASE = '"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]'
BAD = [
    ('{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    ('{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ('{"model": "smollm2-135m", "messages": [{"role": "wizard", "content": "hi"}]}',
     "messages[0].role"),
    ('{"model": "smollm2-135m", "messages": []}', "messages"),
    (f'{{{BASE}, "tools": [{{"type": "function", "function": {{"name": "f"}}}}]}}', "tools"),
    (f'{{{BASE}, "response_format": {{"type": "json_object"}}}}', "response_format"),
    (f'{{{BASE}, "functions": []}}', "functions"),
    (f'{{{BASE}, "tool_choice": "auto"}}', "tool_choice"),
    (f'{{{BASE}, "logit_bias": {{"1": 5}}}}', "logit_bias"),
    (f'{{{BASE}, "frobnicate": 1}}', "frobnicate"),
    (f'{{{BASE}, "max_tokens": 0}}', "max_tokens"),
    (f'{{{BASE}, "max_tokens": "abc"}}', "max_tokens"),
    (f'{{{BASE}, "max_tokens": 1e400}}', "max_tokens"),
    (f'{{{BASE}, "max_completion_tokens": -3}}', "max_completion_tokens"),
    (f'{{{BASE}, "n": 0}}', "n"),
    (f'{{{BASE}, "n": 1e400}}', "n"),
    (f'{{{BASE}, "seed": 1e400}}', "seed"),
    (f'{{{BASE}, "seed": -1}}', "seed"),
    (f'{{{BASE}, "seed": 1180591620717411303424}}', "seed"),
    (f'{{{BASE}, "temperature": NaN}}', "temperature"),
    (f'{{{BASE}, "temperature": -1e400}}', "temperature"),
    (f'{{{BASE}, "temperature": "0.7"}}', "temperature"),
    (f'{{{BASE}, "top_p": 1.5}}', "top_p"),
    (f'{{{BASE}, "top_p": 1e400}}', "top_p"),
    (f'{{{BASE}, "stop": ["a", "b", "c", "d", "e"]}}', "stop"),
    (f'{{{BASE}, "top_logprobs": 2}}', "top_logprobs"),
    (f'{{{BASE}, "presence_penalty": 1}}', "presence_penalty"),
    (f'{{{BASE}, "stream_options": {{"include_usage": true}}}}', "stream_options"),
    ('{"model": "smollm2-135m", "messages": [{"role": "user", "content": "' + " hello" * 9000
     + '"}]}', "messages"),
]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("body", "param"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_invalid_request_is_400_naming_the_field(plain_proxy, body, param, stream):
    if stream and param != "stream_options":
        body = body[:-1] + ', "stream": true}'
    r = httpx.post(plain_proxy.v1 + "/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=60)  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")  # before any SSE byte
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert param.split("[")[0] in err["message"] or param == "messages", err
    assert "\n" not in err["message"] and "hello hello" not in err["message"]


def test_openai_client_sees_bad_requests(oai):
    with pytest.raises(openai.BadRequestError, match="model"):
        oai.chat.completions.create(model="gpt-4", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="n is invalid"):
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, n=0)
    with pytest.raises(openai.BadRequestError, match="tools is not supported"):
        oai.chat.completions.create(
            model=MODEL, messages=MESSAGES,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        oai.embeddings.create(model="minilm-l6", input="x", dimensions=8)


def test_canary_never_reaches_logs_errors_or_metrics(plain_proxy, oai):
    secret = [{"role": "user", "content": f"Remember {CANARY}. What is the capital of France?"}]
    oai.chat.completions.create(model=MODEL, messages=secret, max_tokens=3)
    for body in (
        {"model": "gpt-4", "messages": secret},
        {"model": MODEL, "messages": secret, "tools": [{"x": CANARY}]},
        {"model": MODEL, "messages": [{"role": CANARY, "content": CANARY}]},
        {"model": MODEL, "messages": secret, "max_tokens": CANARY},
        {"model": MODEL, "messages": [{"role": "user", "content": CANARY * 3000}], "stream": True},
    ):
        r = httpx.post(plain_proxy.v1 + "/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and CANARY not in r.text, r.text
    r = httpx.post(
        plain_proxy.v1 + "/embeddings", json={"model": "minilm-l6", "input": [CANARY, 3]}
    )
    assert r.status_code == 400 and CANARY not in r.text
    assert CANARY not in httpx.get(plain_proxy.url + "/metrics").text
    assert CANARY not in plain_proxy.log()  # the session fixture checks again after shutdown
