"""`he serve` with several sessions at once: a worker process per session, a cap, a busy error,
failures that stay inside their own session, and a log that never carries data."""

from __future__ import annotations

import base64
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from privinfer.api import EmbeddingModel
from privinfer.engines.plain import PlainOps
from privinfer.errors import InputError
from privinfer.he.ckks import PARAMS_16384
from privinfer.he.client import run_client_session
from privinfer.he.server import pack_bundle
from privinfer.he.session import HeClient, client_rows
from privinfer.he.transport import ServerBusy, connect
from privinfer.models.bert import Bert

from .he_server_proc import running_server
from .test_ops import _tiny_bert

IDS_A, IDS_B = [1, 7, 23, 5], [3, 9, 2]


@pytest.fixture(scope="module")
def model():
    cfg, weights = _tiny_bert()
    return EmbeddingModel("tiny-bert", cfg, weights, None, Path("."))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("he-conc"), max_sessions=2) as srv:
        yield srv


def _plain(model, ids):
    return Bert(model.cfg, model.weights, PlainOps()).encode(ids)


def _embed(srv, model, ids, client: HeClient | None = None) -> torch.Tensor:
    client = client or HeClient.create(PARAMS_16384)
    conn = connect(srv.cluster, "127.0.0.1", srv.port)
    try:
        run_client_session(
            conn, client, {"task": "embed", "rows": len(ids)}, client_rows(model, ids)
        )
    finally:
        conn.close()
    return client.output


def _in_threads(*jobs) -> list:
    """Run the jobs in threads; return their results, re-raising the first failure."""
    results: list = [None] * len(jobs)

    def run(i, job):
        try:
            results[i] = job()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, j), daemon=True) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=400)
        assert not t.is_alive(), "an HE client session hung"
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def _meet_at_keys(client: HeClient, barrier: threading.Barrier) -> HeClient:
    """The client waits at the server's first request (KEYS) until the others reach theirs:
    past the barrier, all those sessions are open on the server at the same time."""
    galois = client.galois

    def wait_then_answer(steps):
        barrier.wait()
        return galois(steps)

    client.galois = wait_then_answer
    return client


def _wait_for_log(srv, pattern: str, count: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, text := srv.log_text())) < count:
        assert time.monotonic() < deadline, f"log never showed {count} x {pattern!r}:\n{text}"
        time.sleep(0.2)
    return text


def test_two_clients_at_once_both_get_correct_results(server, model):
    barrier = threading.Barrier(2, timeout=180)
    a, b = _in_threads(
        lambda: _embed(server, model, IDS_A, _meet_at_keys(HeClient.create(PARAMS_16384), barrier)),
        lambda: _embed(server, model, IDS_B, _meet_at_keys(HeClient.create(PARAMS_16384), barrier)),
    )
    for got, ids in ((a, IDS_A), (b, IDS_B)):
        assert torch.nn.functional.cosine_similarity(got, _plain(model, ids)).item() > 0.999
    assert "(2 of 2 running)" in server.log_text()


def _open_session(srv, client: HeClient):
    """Connect and send HELO; returns once the server's session has asked for keys."""
    conn = connect(srv.cluster, "127.0.0.1", srv.port)
    conn.send("HELO", {"task": "embed", "rows": 4}, pack_bundle(client.public_bundle()))
    kind, _, _ = conn.recv()
    assert kind == "KEYS"
    return conn


def test_client_beyond_the_cap_is_told_busy_and_the_slot_frees(server):
    holders = [_open_session(server, HeClient.create(PARAMS_16384)) for _ in range(2)]
    third = HeClient.create(PARAMS_16384)
    conn = connect(server.cluster, "127.0.0.1", server.port)
    t0 = time.monotonic()
    with pytest.raises(ServerBusy, match="busy.*try again later"):
        run_client_session(conn, third, {"task": "embed", "rows": 4}, torch.zeros(4, 32))
    assert time.monotonic() - t0 < 15  # promptly, not after a session's worth of waiting
    conn.close()
    for h in holders:  # both clients vanish mid-protocol; their slots come back
        h.close()
    deadline = time.monotonic() + 60
    while True:
        conn = connect(server.cluster, "127.0.0.1", server.port)
        try:
            run_client_session(conn, third, {"task": "embed", "rows": 40}, torch.zeros(40, 32))
        except ServerBusy:
            assert time.monotonic() < deadline, "slots were not freed"
            time.sleep(0.5)
            continue
        except InputError as exc:
            assert "tokens per text" in str(exc)  # served again: refused for its own reason
            break
        finally:
            conn.close()


def _malformed_is_refused(srv) -> None:
    """A malformed bundle is refused (retrying while both slots are still taken)."""
    deadline = time.monotonic() + 60
    while True:
        conn = connect(srv.cluster, "127.0.0.1", srv.port)
        conn.send("HELO", {"task": "embed", "rows": 4}, b"\x05\x00\x00\x00junk!")
        try:
            conn.recv()
        except ServerBusy:
            assert time.monotonic() < deadline, "the dead session's slot was not freed"
            time.sleep(0.5)
            continue
        except InputError as exc:
            assert "Malformed" in str(exc)
            return
        finally:
            conn.close()


@pytest.fixture(scope="module")
def dying_run(server, model):
    """A dies mid-protocol (during its first refresh), then a malformed session is refused,
    while B runs a whole session. Returns B's output and what A sent (log canaries)."""
    barrier = threading.Barrier(2, timeout=180)
    dying = _meet_at_keys(HeClient.create(PARAMS_16384), barrier)
    rows = client_rows(model, IDS_A)
    conns, uploads = [], []
    encrypt = dying.encrypt_rows

    def record(meta, r):
        uploads.append(encrypt(meta, r))
        return uploads[-1]

    def die(payload):
        conns[0].sock.close()
        raise ConnectionAbortedError("client died")

    dying.encrypt_rows, dying.refresh = record, die

    def run_dying():
        conns.append(connect(server.cluster, "127.0.0.1", server.port))
        with pytest.raises((ConnectionAbortedError, OSError)):
            run_client_session(conns[0], dying, {"task": "embed", "rows": 4}, rows)
        _malformed_is_refused(server)

    live = _meet_at_keys(HeClient.create(PARAMS_16384), barrier)
    _, out = _in_threads(run_dying, lambda: _embed(server, model, IDS_B, live))
    bundle = dying.public_bundle()
    canaries = [bundle["public_key"][64:96], bundle["relin_keys"][64:96], uploads[0][200:232]]
    return out, canaries, rows


def test_client_dying_mid_session_does_not_stop_another(server, model, dying_run):
    out, _, _ = dying_run
    assert torch.nn.functional.cosine_similarity(out, _plain(model, IDS_B)).item() > 0.999
    text = server.log_text()
    assert re.search(r"session \d+ end: dropped, task embed", text)
    assert "refused (malformed request)" in text or "refused (InputError)" in text


def test_log_has_one_line_per_session_start_and_end_and_no_data(server, model, dying_run):
    _, canaries, rows = dying_run
    client = HeClient.create(PARAMS_16384)
    conn = connect(server.cluster, "127.0.0.1", server.port)  # a client-chosen string
    with pytest.raises(InputError):
        run_client_session(conn, client, {"task": "CANARY-7f3e9"}, rows)
    conn.close()
    starts = len(re.findall(r"session \d+ start", server.log_text()))
    text = _wait_for_log(server, r"session \d+ end: ", starts)
    raw = server.log.read_bytes()
    for n in range(1, starts + 1):
        line = re.search(rf"session {n} end: .*", text)
        stats = r"[\d.]+ s, \d+ refresh rounds, [\d.]+ MB in, [\d.]+ MB out"
        assert line and re.search(stats, line[0])
    assert "CANARY" not in text
    for blob in canaries:  # key and ciphertext bytes, raw, hex or base64
        assert blob not in raw
        assert blob.hex() not in text and base64.b64encode(blob).decode()[:24] not in text
    values = [f"{v:.5f}" for v in rows.flatten()[:64].tolist() if abs(v) > 0.01]
    assert values and not any(v in text for v in values)  # the plaintext input rows


def test_client_refusing_a_refresh_tells_the_server_why(server, model):
    """A refresh whose masked values leave the window makes the client stop: it sends ERR with
    a fixed reason (no value), raises locally, and the server logs the stop as the client's."""
    from privinfer.errors import SecurityError
    from privinfer.he.refresh import OUT_OF_BOUND

    client = HeClient.create(PARAMS_16384)

    def refuse(payload):
        raise SecurityError(OUT_OF_BOUND)

    client.refresh = refuse
    deadline = time.monotonic() + 120
    while True:
        conn = connect(server.cluster, "127.0.0.1", server.port)
        try:
            run_client_session(
                conn, client, {"task": "embed", "rows": 4}, client_rows(model, IDS_A)
            )
        except ServerBusy:  # an earlier test's worker may still hold a slot
            assert time.monotonic() < deadline
            time.sleep(0.5)
            continue
        except SecurityError as exc:
            assert str(exc) == OUT_OF_BOUND
            break
        finally:
            conn.close()
    # the worker logs the stop after the client has gone, which a loaded machine can delay
    _wait_for_log(server, r"session \d+ end: stopped by client \(SecurityError\), task embed", 1)
