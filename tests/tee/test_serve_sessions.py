"""TEE serving with a debug enclave, a 1-second session TTL and at most 4 sessions.

Clients refuse the debug enclave by default; a client that explicitly admits debug can use it,
and then sees session expiry (410) and the session bound (429) as JSON errors.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from privinfer.tee.claims import EvidenceRejected, Reason
from privinfer.tee.client import TeeClient, TeeResult, claims_summary
from privinfer.tee.local import LocalServer
from privinfer.tee.protocol import TeeServerError

CONFIG = {"session_ttl_s": 1, "max_sessions": 4}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tee-sessions")
    srv = LocalServer(
        platform_dir=d / "platform",
        data_dir=d / "data",
        root=d / "root.pem",
        threads=1,
        session_ttl=1,
        max_sessions=4,
        debug_enclave=True,
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def debug_client(server, smollm):
    with TeeClient(
        server.url, root_cert=server.root, model_file=smollm.source, config=CONFIG, allow_debug=True
    ) as c:
        yield c


def test_client_rejects_debug_enclave(server, smollm):
    with TeeClient(server.url, root_cert=server.root, model_file=smollm.source, config=CONFIG) as c:
        with pytest.raises(EvidenceRejected) as e:
            c.attest()
    assert e.value.reason is Reason.DEBUG_ENABLED


def test_cli_attest_rejects_debug_enclave(server):
    out = subprocess.run(
        [sys.executable, "-m", "privinfer.cli", "tee", "attest", "--server", server.url,
         "--root", str(server.root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 3  # rejected evidence, as in `tee verify` (`privinfer --help`)
    assert "debug-enabled" in out.stderr


def test_debug_admitted_explicitly(debug_client):
    res = TeeResult()
    for _ in debug_client.generate("What is the capital of France?", max_new_tokens=6, result=res):
        pass
    assert "Paris" in res.text
    assert res.claims is not None and res.claims.debug
    assert "debug ON" in claims_summary(res.claims)


def test_session_bound(debug_client):
    # With a 1 s TTL, the bound is only testable while the 4 sessions are alive: on a loaded
    # machine 5 attestations can take longer than that, the first session expires and a 5th is
    # rightly admitted. The enclave stamps sessions with the same monotonic clock, so an attempt
    # that ended within TTL of its start is conclusive (all 4 alive: the 5th must be refused);
    # a slower attempt that got a 5th session in proves nothing, and is retried.
    # Only sessions whose handshake completed (a first request opened) count against the
    # bound, so each of the 4 runs a one-token request before the 5th attestation.
    ttl = CONFIG["session_ttl_s"]
    for _attempt in range(5):
        time.sleep(ttl + 0.1)  # sessions of earlier tests (or attempts) expire
        t0 = time.monotonic()
        sessions = [debug_client.attest() for _ in range(4)]
        try:
            for s in sessions:
                for _ in s.stream({"prompt_ids": [1], "chat": False, "max_new_tokens": 1}):
                    pass
        except TeeServerError as e:  # too slow: the first session expired; retry
            assert (e.status, e.code) == (410, "session_expired")
            assert time.monotonic() - t0 >= ttl
            continue
        try:
            fifth = debug_client.attest()
        except TeeServerError as e:
            assert (e.status, e.code) == (429, "too_many_sessions")
            break
        finally:
            took = time.monotonic() - t0
        fifth.close()
        assert took >= ttl, f"a 5th session was admitted while 4 were live ({took:.2f} s)"
    else:
        pytest.fail("5 attestations never fit in the 1 s TTL, so the bound went untested")
    for s in sessions:
        s.close()
    debug_client.attest().close()


def test_session_expires(debug_client):
    s = debug_client.attest()
    time.sleep(1.3)
    with pytest.raises(TeeServerError) as e:
        for _ in s.stream({"prompt": "hi", "max_new_tokens": 2}):
            pass
    assert (e.value.status, e.value.code) == (410, "session_expired")
    res = TeeResult()
    for _ in debug_client.generate("hi", max_new_tokens=2, result=res):
        pass
    assert res.token_ids
