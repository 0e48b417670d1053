"""The proxy in mode tee: `privinfer serve --mode tee --server URL --root PEM` in front of the
session's shared local enclave (tests/conftest.py, also serving tests/tee); the tee plug-in
attests it for every request, and the answers equal plain's; the page's info shows the verified
claims; logprobs are refused (the enclave sends token ids only). The proxy starting an enclave of
its own (no --server: the plug-in's `services`) is not exercised here, to start one enclave per
session only."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import Proxy, stopped_cleanly

MODEL = "smollm2-135m"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tee_proxy(tmp_path_factory, shared_tee_server):
    d = tmp_path_factory.mktemp("serve-tee")
    srv = shared_tee_server
    proxy = Proxy(["--mode", "tee", "--server", srv.url, "--root", str(srv.root)], d,
                  env={"XDG_CACHE_HOME": str(d / "cache")})  # fmt: skip
    yield proxy
    stopped_cleanly(proxy)


@pytest.mark.timeout(600)
def test_tee_chat_stream_stop_seed_and_claims(tee_proxy, smollm):
    oai = tee_proxy.client()
    info = httpx.get(tee_proxy.v1 + "/privinfer/info").json()
    claims = info["protection"]
    assert info["mode"] == "tee" and claims["debug"] is False and len(claims["measurement"]) == 96
    assert claims["platform"] and "svn" in claims

    r = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12)
    assert r.choices[0].message.content == smollm.generate(MESSAGES, max_new_tokens=12).text
    assert r.system_fingerprint == claims["measurement"]  # verified for this request

    chunks = list(oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, stop=["Paris"], stream=True))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is "
    assert chunks[-1].choices[0].finish_reason == "stop"

    kw = dict(model=MODEL, messages=MESSAGES, max_tokens=5, temperature=1.2, seed=3)
    a, b = oai.chat.completions.create(**kw), oai.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    plain = smollm.generate(MESSAGES, max_new_tokens=5, temperature=1.2, seed=3).text
    assert a.choices[0].message.content == plain

    with pytest.raises(openai.BadRequestError, match="logprobs are not available in mode tee"):
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True)
    with pytest.raises(openai.BadRequestError, match="model"):
        oai.embeddings.create(model="minilm-l6", input="x")  # tee does not embed
    long = [{"role": "user", "content": " hello" * 9000}]
    r2 = httpx.post(tee_proxy.v1 + "/chat/completions",
                    json={"model": MODEL, "messages": long, "stream": True}, timeout=60)  # fmt: skip
    assert r2.status_code == 400 and "context" in r2.json()["error"]["message"]
    assert [m.id for m in oai.models.list().data] == [MODEL]


def test_tee_page_shows_the_verified_claims(tee_proxy, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    claims = httpx.get(tee_proxy.v1 + "/privinfer/info").json()["protection"]
    browser.get(tee_proxy.url + "/")
    WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
    )
    panel = browser.find_element(By.ID, "protection").text
    assert claims["measurement"] in panel and claims["platform"] in panel
    assert "debug\noff" in panel and "TCB (svn)" in panel
