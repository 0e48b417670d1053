"""mpc and he through the proxy, one short request each on a tiny random LLaMA: the tokens equal
plain's, and the stream's `privinfer` objects carry the mode's rounds and bytes (mpc: token by
token, as the parties report them with each output share)."""

from __future__ import annotations

import json

import httpx
import pytest

import privinfer
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder

from .conftest import Proxy, stopped_cleanly


def _tiny(tmp, **cfg):
    c = tiny_llama_config(**cfg)
    return str(write_hf_folder(tmp / "tiny", c, tiny_llama_weights(c, seed=5)))


def _stream(url: str, model: str, n: int) -> tuple[str, list[dict]]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": n,
            "stream": True}  # fmt: skip
    text, extras = "", []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            assert "error" not in obj, obj
            if obj.get("choices"):
                text += obj["choices"][0]["delta"].get("content") or ""
            if obj.get("privinfer"):
                extras.append(obj["privinfer"])
    return text, extras


@pytest.mark.timeout(600)
def test_mpc_through_the_proxy(tmp_path):
    model = _tiny(tmp_path)
    proxy = Proxy(["--mode", "mpc", "--model", model, "--embed-model", "none"], tmp_path)
    try:
        assert len(proxy.children) >= 3  # three local parties, started once
        info = httpx.get(proxy.url + "/v1/privinfer/info").json()["protection"]
        assert [p["id"] for p in info["parties"]] == [0, 1, 2]
        assert all(len(p["cert_sha256"]) == 64 for p in info["parties"])
        want = privinfer.load(model).generate("hi", max_new_tokens=3).text
        for _ in range(2):  # the same parties serve one request after another
            text, extras = _stream(proxy.url, model, 3)
            assert text == want
            assert extras[-1]["rounds"] > 0 and extras[-1]["bytes_sent"] > 0  # the parties'
            assert set(extras[-1]["mpc"]) == {"0", "1", "2"}
            seen = [e["client_bytes_received"] for e in extras if "client_bytes_received" in e]
            assert seen[0] > 0 and seen == sorted(seen) and seen[-1] > seen[0]  # as they accrue
            per_token = [e for e in extras if "tokens" in e and "mpc" not in e]  # one per token
            rounds = [e["rounds"] for e in per_token]
            sent = [e["bytes_sent"] for e in per_token]
            assert len(per_token) == 3 and 0 < rounds[0] < rounds[1] < rounds[2]
            assert 0 < sent[0] < sent[1] < sent[2]
    finally:
        stopped_cleanly(proxy)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_he_through_the_proxy(tmp_path):
    """The smallest honest HE run: one layer, hidden 32, a two-token raw prompt through
    /v1/completions (a 4-token context; the chat template would make it 21 tokens and double
    the time), one token, real CKKS with the client's refreshes. (A one-token prompt fails in
    the HE engine today: SEAL's "result ciphertext is transparent".)"""
    model = _tiny(tmp_path, layers=1, hidden=32, heads=2, kv_heads=1, ffn=64)
    proxy = Proxy(["--mode", "he", "--model", model, "--embed-model", "none"], tmp_path)
    try:
        assert proxy.children  # the local HE server, started once
        info = httpx.get(proxy.url + "/v1/privinfer/info").json()["protection"]
        assert info["poly_modulus_degree"] == 16384 and info["security_level_bits"] >= 128
        want = privinfer.load(model).generate("hi", chat=False, max_new_tokens=1).text
        body = {"model": model, "prompt": "hi", "max_tokens": 1, "stream": True}
        text, extras = "", []
        with httpx.stream("POST", proxy.url + "/v1/completions", json=body, timeout=600) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                obj = json.loads(line[6:])
                assert "error" not in obj, obj
                text += "".join(c.get("text") or "" for c in obj.get("choices", []))
                if obj.get("privinfer"):
                    extras.append(obj["privinfer"])
        assert text == want
        assert extras[-1]["he"]["rounds"] > 0 and extras[-1]["bytes_sent"] > 0
        assert extras[0]["client_bytes_sent"] > 0  # the proxy's uploads, from the first token
    finally:
        stopped_cleanly(proxy)
