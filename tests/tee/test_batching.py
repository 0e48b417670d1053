"""Continuous batching in the enclave (tee/batching.py) on a tiny model, in process: 16 concurrent
sessions batched together give each session exactly its solo output (same seed), their canaries
never reach another session's messages or the enclave's log, and the public prefix cache changes
no output."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from privinfer.engines.plain import sample_token
from privinfer.models.ops import Sampler
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_gguf
from privinfer.tee.batching import PublicPrefix
from privinfer.tee.enclave import Enclave
from privinfer.tee.enclave_model import load_model_from_memory
from privinfer.tee.protocol import enclave_config
from privinfer.tee.request import parse_request

N_SESSIONS = 16


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory):
    cfg = tiny_llama_config()
    path = write_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", cfg, tiny_llama_weights(cfg))
    return load_model_from_memory("tiny.gguf", bytearray(Path(path).read_bytes()))


@pytest.fixture(scope="module")
def enclave(tiny_lm):
    return Enclave(None, None, tiny_lm, enclave_config())  # type: ignore[arg-type]


def _requests() -> list[dict]:
    """16 requests with their own canary, prompt length, budget and sampler (greedy or seeded)."""
    reqs = []
    for i in range(N_SESSIONS):
        req: dict = {
            "prompt": f"CANARY-{i:02d}-{'x' * (i * 3)} secret {i * 7919}",
            "max_new_tokens": 6 + (i % 5) * 3,
        }
        if i % 2:
            req.update(temperature=0.9, top_p=0.9, seed=1000 + i)
        if i % 4 == 3:
            req.update(chat=False)  # no public prefix: a cold prefill
        reqs.append(req)
    return reqs


def _run(enclave: Enclave, req: dict) -> list[dict]:
    return list(enclave._run(*parse_request(req, enclave.lm, 512)))


def test_concurrent_sessions_match_solo_and_keep_canaries(enclave, capsys):
    reqs = _requests()
    solo = [_run(enclave, r) for r in reqs]
    rounds0 = enclave.batcher.rounds
    out: list[list[dict] | None] = [None] * N_SESSIONS
    go = threading.Barrier(N_SESSIONS)

    def session(i: int) -> None:
        go.wait()
        out[i] = _run(enclave, reqs[i])

    threads = [threading.Thread(target=session, args=(i,)) for i in range(N_SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert enclave.batcher.largest_batch >= 8  # the decode steps really ran batched
    decode_steps = sum(len(m[-1]["token_s"]) for m in solo)
    assert enclave.batcher.rounds - rounds0 < decode_steps  # fewer rounds than steps: batched
    for i in range(N_SESSIONS):
        assert out[i] is not None
        tokens = [m["id"] for m in out[i] if m["type"] == "token"]
        assert tokens == [m["id"] for m in solo[i] if m["type"] == "token"], f"session {i}"
        assert out[i][-1]["new_tokens"] == len(tokens)
        assert out[i][-1]["prompt_tokens"] == solo[i][-1]["prompt_tokens"]
        # no other session's canary in this session's messages (texts or metrics)
        text = repr(out[i])
        for j in range(N_SESSIONS):
            if j != i:
                assert f"CANARY-{j:02d}" not in text and f"secret {j * 7919}" not in text
    logs = capsys.readouterr()
    for j in range(N_SESSIONS):
        assert f"CANARY-{j:02d}" not in logs.out + logs.err


def test_prefix_cache_is_public_and_changes_no_output(enclave, tiny_lm):
    prefix = enclave.prefix
    ids = tiny_lm.prompt_ids("what is two plus two")
    assert prefix.ids and ids[: len(prefix.ids)] == prefix.ids
    # the prefix is the same for every prompt: it holds no request content
    assert PublicPrefix(enclave.model, tiny_lm).ids == prefix.ids
    assert prefix.match(prefix.ids) == 0  # a prompt must go beyond the prefix
    assert prefix.match(tiny_lm.prompt_ids("hello", chat=False)) == 0
    m = enclave.model
    with torch.inference_mode():
        cold = m.new_cache()
        full = m.forward(ids, cold, 0)[-1]
        warm = prefix.session_cache()
        part = m.forward(ids[len(prefix.ids) :], warm, len(prefix.ids))[-1]
        assert (full - part).abs().max().item() < 1e-4
        # a session's appends never reach the shared prefix cache
        assert prefix.cache.length[0] == len(prefix.ids)
        cold_toks, warm_toks = [], []
        pos = len(ids)
        for _ in range(8):
            cold_toks.append(sample_token(full, Sampler(), None))
            warm_toks.append(sample_token(part, Sampler(), None))
            full = m.forward([cold_toks[-1]], cold, pos)[-1]
            part = m.forward([warm_toks[-1]], warm, pos)[-1]
            pos += 1
    assert cold_toks == warm_toks
