"""Session bounds: only a completed handshake counts against `max_sessions`; pending handshakes
have their own small bound and a short TTL; the host caps each client address.

The server here: at most 2 established sessions, 3 pending handshakes living 2 s, and 2 sessions
per client address. Two clients talk from different loopback addresses (127.0.0.2, 127.0.0.3).
"""

from __future__ import annotations

import time

import httpx
import pytest

from privinfer.tee.client import TeeClient
from privinfer.tee.local import LocalServer
from privinfer.tee.protocol import TeeServerError

CONFIG = {"max_sessions": 2, "max_pending_sessions": 3, "pending_ttl_s": 2}
ONE_TOKEN = {"prompt_ids": [1], "chat": False, "max_new_tokens": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tee-limits")
    srv = LocalServer(
        platform_dir=d / "platform",
        data_dir=d / "data",
        root=d / "root.pem",
        threads=1,
        max_sessions=2,
        config={"max_pending_sessions": 3, "pending_ttl_s": 2},
        max_sessions_per_client=2,
    )
    srv.start()
    yield srv
    srv.stop()


def _client(server: LocalServer, smollm, address: str) -> TeeClient:
    return TeeClient(
        server.url,
        root_cert=server.root,
        model_file=smollm.source,
        config=CONFIG,
        transport=httpx.HTTPTransport(local_address=address),
    )


@pytest.fixture(scope="module")
def x(server, smollm):
    with _client(server, smollm, "127.0.0.2") as c:
        yield c


@pytest.fixture(scope="module")
def y(server, smollm):
    with _client(server, smollm, "127.0.0.3") as c:
        yield c


def run(session) -> None:
    for _ in session.stream(ONE_TOKEN):
        pass


def refused(fn) -> TeeServerError:
    with pytest.raises(TeeServerError) as e:
        fn()
    return e.value


def test_pending_handshakes_do_not_count_against_the_cap(x, y):
    a, b = x.attest(), x.attest()
    c = y.attest()  # 3 sessions attested, none has completed its handshake: all admitted
    err = refused(y.attest)  # the pending bound (3)
    assert (err.status, err.code) == (429, "too_many_sessions")
    assert "handshake" in str(err)
    run(a)
    run(c)  # 2 established: the cap
    err = refused(lambda: run(b))  # b's handshake completes, but the cap is full: b ends
    assert (err.status, err.code) == (429, "too_many_sessions")
    err = refused(y.attest)
    assert (err.status, err.code) == (429, "too_many_sessions")
    assert "session limit" in str(err)
    err = refused(lambda: run(b))
    assert err.status == 404
    a.close()
    c.close()
    d = y.attest()
    run(d)
    d.close()


def test_per_client_cap(x, y):
    a, b = x.attest(), x.attest()
    err = refused(x.attest)  # the enclave has room (2 pending of 3), the host refuses
    assert (err.status, err.code) == (429, "too_many_sessions")
    assert "this client" in str(err)
    d = y.attest()  # another address is not affected
    d.close()
    a.close()
    e = x.attest()  # a closed: a slot is free again
    for s in (b, e):
        run(s)
        s.close()


def test_pending_handshake_times_out(x):
    a = x.attest()
    time.sleep(2.3)
    err = refused(lambda: run(a))
    assert (err.status, err.code) == (410, "session_expired")
    s1, s2 = x.attest(), x.attest()  # the host forgot the expired one too
    s1.close()
    s2.close()
