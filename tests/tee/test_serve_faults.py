"""TEE serving under bad input and faults: every refusal is a 4xx JSON error and the server keeps serving.

Covers malformed JSON, wrong content types, oversized bodies, unknown sessions, tampered and
replayed records (the session ends), client-side policy rejections, and a killed enclave (503 at
once). The enclave-kill test runs last: it takes the module's server down.
"""

from __future__ import annotations

import time

import httpx
import psutil
import pytest

from privinfer.tee.channel import ChannelError
from privinfer.tee.claims import EvidenceRejected, Reason
from privinfer.tee.client import TeeClient, TeeResult
from privinfer.tee.local import LocalServer
from privinfer.tee.platform import init_platform
from privinfer.tee.protocol import TeeServerError, unpack_records


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tee-faults")
    srv = LocalServer(
        platform_dir=d / "platform", data_dir=d / "data", root=d / "root.pem", threads=1
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: LocalServer, smollm):
    with TeeClient(server.url, root_cert=server.root, model_file=smollm.source) as c:
        yield c


def still_serves(client: TeeClient) -> None:
    res = TeeResult()
    for _ in client.generate("What is the capital of France?", max_new_tokens=3, result=res):
        pass
    assert len(res.token_ids) == 3


def expect_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["code"] == code


def gen_url(server: LocalServer, sid: str) -> str:
    return f"{server.url}/v1/sessions/{sid}/generate"


OCT = {"content-type": "application/octet-stream"}


def test_attest_malformed_json(server, client):
    r = httpx.post(
        server.url + "/v1/attest", content=b"{nonce:", headers={"content-type": "application/json"}
    )
    expect_error(r, 400, "bad_request")
    still_serves(client)


def test_attest_wrong_content_type(server, client):
    r = httpx.post(
        server.url + "/v1/attest",
        content=b'{"nonce": "00"}',
        headers={"content-type": "text/plain"},
    )
    expect_error(r, 415, "unsupported_media_type")
    still_serves(client)


def test_attest_bad_nonce_and_context(server, client):
    expect_error(
        httpx.post(server.url + "/v1/attest", json={"nonce": "ab" * 16}), 400, "bad_request"
    )
    expect_error(httpx.post(server.url + "/v1/attest", json={"nonce": 5}), 400, "bad_request")
    r = httpx.post(server.url + "/v1/attest", json={"nonce": "00" * 32, "context": "00" * 300})
    expect_error(r, 400, "bad_request")
    still_serves(client)


def test_oversized_bodies(server, client):
    big = b"{" + b" " * 10_000 + b"}"
    r = httpx.post(
        server.url + "/v1/attest", content=big, headers={"content-type": "application/json"}
    )
    expect_error(r, 413, "payload_too_large")
    s = client.attest()
    r = httpx.post(gen_url(server, s.sid.hex()), content=b"\0" * ((1 << 20) + 1), headers=OCT)
    expect_error(r, 413, "payload_too_large")
    still_serves(client)


def test_generate_wrong_content_type(server, client):
    s = client.attest()
    body, _ = s.request_body({"prompt": "hi", "max_new_tokens": 2})
    r = httpx.post(
        gen_url(server, s.sid.hex()), content=body, headers={"content-type": "application/json"}
    )
    expect_error(r, 415, "unsupported_media_type")
    still_serves(client)


def test_unknown_and_malformed_session(server, client):
    s = client.attest()
    body, _ = s.request_body({"prompt": "hi", "max_new_tokens": 2})
    expect_error(
        httpx.post(gen_url(server, "ab" * 16), content=body, headers=OCT), 404, "unknown_session"
    )
    expect_error(
        httpx.post(gen_url(server, "xyz"), content=body, headers=OCT), 404, "unknown_session"
    )
    expect_error(httpx.delete(f"{server.url}/v1/sessions/{'cd' * 16}"), 404, "unknown_session")
    still_serves(client)


def test_tampered_request_record_ends_session(server, client):
    s = client.attest()
    body, _ = s.request_body({"prompt": "hi", "max_new_tokens": 2})
    bad = bytearray(body)
    bad[60] ^= 0x01  # inside the first record's ciphertext
    expect_error(
        httpx.post(gen_url(server, s.sid.hex()), content=bytes(bad), headers=OCT), 400, "bad_record"
    )
    body2, _ = s.request_body({"prompt": "hi", "max_new_tokens": 2})
    expect_error(
        httpx.post(gen_url(server, s.sid.hex()), content=body2, headers=OCT), 404, "unknown_session"
    )
    still_serves(client)


def test_garbage_and_truncated_bodies(server, client):
    for body in (b"", b"\0" * 10, b"\0\0\0\1" + b"\0" * 32 + b"\0\0\0\x09abc"):
        s = client.attest()
        r = httpx.post(gen_url(server, s.sid.hex()), content=body, headers=OCT)
        expect_error(r, 400, "bad_record")
    s = client.attest()
    body, _ = s.request_body({"prompt": "hi", "max_new_tokens": 2})
    idx_pub, recs = body[:36], unpack_records(body[36:])
    no_end = idx_pub + len(recs[0]).to_bytes(4, "big") + recs[0]  # END record dropped
    expect_error(
        httpx.post(gen_url(server, s.sid.hex()), content=no_end, headers=OCT), 400, "bad_record"
    )
    still_serves(client)


def test_replayed_request_is_rejected_and_ends_session(server, client):
    s = client.attest()
    body, _ = s.request_body({"prompt": "hi", "max_new_tokens": 2})
    r1 = httpx.post(gen_url(server, s.sid.hex()), content=body, headers=OCT)
    assert r1.status_code == 200 and len(r1.content) > 0
    expect_error(
        httpx.post(gen_url(server, s.sid.hex()), content=body, headers=OCT), 400, "bad_record"
    )
    expect_error(
        httpx.post(gen_url(server, s.sid.hex()), content=body, headers=OCT), 404, "unknown_session"
    )
    still_serves(client)


class _Mangle(httpx.BaseTransport):
    """Client-side view of an active attacker on the response stream."""

    def __init__(self, how: str) -> None:
        self.inner, self.how = httpx.HTTPTransport(), how

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if not request.url.path.endswith("/generate") or resp.status_code != 200:
            return resp
        data = resp.read()
        resp.close()
        recs = unpack_records(data)
        if self.how == "tamper":
            r = bytearray(recs[1])
            r[-1] ^= 1
            recs[1] = bytes(r)
        elif self.how == "replay":
            recs.insert(2, recs[1])
        elif self.how == "truncate":
            recs = recs[:-1]
        out = b"".join(len(x).to_bytes(4, "big") + x for x in recs)
        return httpx.Response(
            200, headers={"content-type": "application/octet-stream"}, content=out
        )


@pytest.mark.parametrize("how", ["tamper", "replay", "truncate"])
def test_tampered_replayed_truncated_response_rejected(server, smollm, how):
    with TeeClient(
        server.url, root_cert=server.root, model_file=smollm.source, transport=_Mangle(how)
    ) as c:
        with pytest.raises(ChannelError):
            for _ in c.generate("What is the capital of France?", max_new_tokens=4):
                pass


def test_policy_rejects_wrong_measurement(server):
    with TeeClient(server.url, root_cert=server.root, measurement=b"\x11" * 48) as c:
        with pytest.raises(EvidenceRejected) as e:
            c.attest()
    assert e.value.reason is Reason.MEASUREMENT_NOT_ALLOWED


def test_policy_rejects_other_root(server, smollm, tmp_path):
    init_platform(tmp_path / "other", export_root_to=tmp_path / "other_root.pem")
    with TeeClient(
        server.url, root_cert=tmp_path / "other_root.pem", model_file=smollm.source
    ) as c:
        with pytest.raises(EvidenceRejected) as e:
            c.attest()
    assert e.value.reason is Reason.UNTRUSTED_ROOT


def test_policy_rejects_other_config(server, smollm):
    with TeeClient(
        server.url, root_cert=server.root, model_file=smollm.source, config={"max_new_tokens": 7}
    ) as c:
        with pytest.raises(EvidenceRejected) as e:
            c.attest()
    assert e.value.reason is Reason.MEASUREMENT_NOT_ALLOWED


def test_zz_enclave_killed_gives_503_quickly(server, client):
    """Runs last in this module: kills the enclave process under the running host."""
    host = psutil.Process(server.proc.pid)
    enclaves = [p for p in host.children() if "privinfer.tee.enclave" in " ".join(p.cmdline())]
    assert len(enclaves) == 1
    enclaves[0].kill()
    deadline = time.monotonic() + 30  # a deadline, however busy the machine
    while True:  # the host reaps it on its next request; until then it is a zombie
        try:
            if enclaves[0].status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        assert time.monotonic() < deadline, "the killed enclave never died"
        time.sleep(0.05)
    t0 = time.perf_counter()
    r = httpx.post(server.url + "/v1/attest", json={"nonce": "00" * 32}, timeout=60)
    took = time.perf_counter() - t0
    expect_error(r, 503, "enclave_unavailable")
    # quickly: the host sees the dead process (or a refused socket), it does not wait out its
    # 10 s enclave-call timeout; the reason says so, and the time stays below that timeout
    assert r.json()["error"]["message"] != "the enclave did not answer", r.text
    assert took < 8.0, took
    expect_error(httpx.get(server.url + "/healthz", timeout=10), 503, "enclave_unavailable")
    with pytest.raises(TeeServerError) as e:
        client.attest()
    assert e.value.status == 503
