"""The enclave refuses bad numbers with a `bad_request` (400) error record, never `internal`.

The Python API and the CLI check sampling numbers before they send anything; these tests play a
buggy or malicious client instead: they send hand-made requests through an attested session, so
only the enclave's own checks stand between the numbers and the sampler. Every refusal must reach
the client as `RequestRefused` (400 bad_request, one sentence naming the field), not as a stream
cut off before END (which looks like tampering), and the session keeps serving.
"""

from __future__ import annotations

import pytest

from privinfer.errors import InputError
from privinfer.tee.client import TeeClient, TeeResult
from privinfer.tee.local import LocalServer
from privinfer.tee.protocol import RequestRefused, TeeServerError

BAD = [
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("temperature", -1.0),
    ("temperature", "hot"),
    ("top_p", float("nan")),
    ("top_p", 0.0),
    ("seed", 2**70),
    ("seed", -1),
    ("seed", 1.5),
    ("seed", True),
    ("max_new_tokens", float("inf")),
    ("max_new_tokens", 0),
    ("max_new_tokens", "abc"),
    ("max_new_tokens", 10**400),
    ("prompt_ids", [1, float("nan")]),
    ("prompt_ids", [2**70]),
]


@pytest.fixture(scope="module")
def client(shared_tee_server: LocalServer, smollm):
    with TeeClient(
        shared_tee_server.url, root_cert=shared_tee_server.root, model_file=smollm.source
    ) as c:
        yield c


def refusal(session, request: dict) -> RequestRefused:
    with pytest.raises(RequestRefused) as e:
        for _ in session.stream(request):
            pass
    return e.value


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}"[:40] for f, v in BAD])
def test_bad_number_is_a_bad_request_record(client, field, value):
    s = client.attest()
    try:
        req = {"temperature": 0.5, "seed": 1, "max_new_tokens": 2, field: value}
        if field != "prompt_ids":
            req["prompt"] = "hi"
        err = refusal(s, req)
        assert (err.status, err.code) == (400, "bad_request")
        assert isinstance(err, TeeServerError) and isinstance(err, InputError)
        assert field in err.message and err.message.count(". ") == 0, err.message
        # the refusal is an answer, not a broken channel: the same session serves on
        res = TeeResult()
        for _ in s.stream({"prompt": "hi", "max_new_tokens": 2}, res):
            pass
        assert len(res.token_ids) == 2
    finally:
        s.close()


def test_malformed_request_names_what_is_missing(client):
    s = client.attest()
    try:
        err = refusal(s, {"max_new_tokens": 2})
        assert (err.status, err.code) == (400, "bad_request")
        assert "prompt" in err.message
        err = refusal(s, {"messages": [{"role": "user"}]})
        assert "messages" in err.message
    finally:
        s.close()
