"""A mode that fails part way through a stream: the client gets an error event and [DONE], the
proxy keeps serving, and no prompt or exception text of a foreign error reaches the client.
The proxy runs in this process (the app on a real socket) with a test mode registered by one
dictionary entry, as any new mode would be."""

from __future__ import annotations

import json
import textwrap
import threading
import time

import httpx
import pytest
import uvicorn

import privinfer
from privinfer import modes
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder
from privinfer.net.cluster import free_ports
from privinfer.serve.app import create_app
from privinfer.serve.backend import open_backend

from .conftest import CANARY

FLAKY = '''
"""plain that fails after two tokens when asked to sample (a test mode)."""

from privinfer.errors import PrivinferError
from privinfer.modes import Mode
from privinfer.modes.plain import MODE as PLAIN
from privinfer.security.matrix import ADVERSARIES, ASSETS, Cell


class FlakyMode(Mode):
    name = "flaky"
    summary = "plain that breaks"
    tasks = frozenset({"generate"})
    leakage = ("everything",)
    threat = {a: {x: Cell("no", "nothing") for x in ASSETS} for a in ADVERSARIES}
    bench_workloads = ("generate",)

    def generate(self, model, req, stats):
        for i, tok in enumerate(PLAIN.generate(model, req, stats)):
            if i == 2 and req.sampler.temperature > 1.5:
                raise RuntimeError("boom: " + model.tokenizer.decode(req.prompt_ids))
            if i == 2 and req.sampler.temperature > 0.5:
                raise PrivinferError("party 1 went away")
            yield tok


MODE = FlakyMode()
'''


@pytest.fixture(scope="module")
def flaky(tmp_path_factory):
    d = tmp_path_factory.mktemp("flaky")
    (d / "flaky_mode.py").write_text(textwrap.dedent(FLAKY))
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(d))
    mp.setitem(modes.REGISTRY, "flaky", "flaky_mode")
    cfg = tiny_llama_config()
    folder = str(write_hf_folder(d / "tiny", cfg, tiny_llama_weights(cfg, seed=5)))
    lm = privinfer.load(folder)
    (port,) = free_ports(1)
    with open_backend(
        "flaky", model=folder, embed_model=None, options={}, loaded={folder: lm}
    ) as b:
        server = uvicorn.Server(uvicorn.Config(create_app(b), port=port, log_level="warning"))
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", folder
        server.should_exit = True
        t.join(10)
    mp.undo()


def _events(url: str, model: str, temperature: float) -> tuple[int, list[str]]:
    body = {"model": model, "stream": True, "max_tokens": 6, "temperature": temperature,
            "seed": 1, "messages": [{"role": "user", "content": f"hi {CANARY}"}]}  # fmt: skip
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        return r.status_code, [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]


def test_failure_mid_stream_is_an_error_event_then_done(flaky):
    url, model = flaky
    for temperature, message in ((1.0, "mode flaky failed: party 1 went away"),
                                 (2.0, "internal error (RuntimeError)")):  # fmt: skip
        status, data = _events(url, model, temperature)
        assert status == 200 and data[-1] == "[DONE]"
        err = json.loads(data[-2])["error"]
        assert err["message"] == message and CANARY not in "".join(data)
        contents = [json.loads(x)["choices"][0]["delta"].get("content") for x in data[1:-2]]
        assert len([c for c in contents if c is not None]) == 2  # two tokens went out first
        status, data = _events(url, model, 0.0)  # the proxy goes on serving
        assert status == 200 and data[-1] == "[DONE]" and "error" not in data[-2]
        assert json.loads(data[-2])["choices"][0]["finish_reason"] in ("stop", "length")
    m = httpx.get(url + "/metrics").text
    assert 'privinfer_choices_finished_total{mode="flaky",reason="error"} 2.0' in m
    assert CANARY not in m
