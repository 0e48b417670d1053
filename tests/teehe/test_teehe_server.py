"""tee+he end to end: a server and its refresh enclave (measured launch, own user) in their own
processes, one for the module; the test plays the client, a second server and the attacker.

Order matters: the fault tests at the end kill a server session and then the enclave."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.procs import alive, wait_gone

from privinfer.engines.plain import PlainOps
from privinfer.he.ckks import PARAMS_16384, CkksContext
from privinfer.he.refresh import (
    OUT_OF_BOUND,
    LocalRefreshClient,
    Refresher,
    pack_request,
    unpack_request,
)
from privinfer.he.session import HeClient
from privinfer.he.transport import PeerRefused
from privinfer.models.bert import Bert
from privinfer.net.cluster import load_cluster
from privinfer.tee.attestation import new_nonce
from privinfer.tee.channel import RecordType, client_channel
from privinfer.tee.claims import EvidenceRejected
from privinfer.tee.policy import ANY, Policy
from privinfer.teehe.client import Trust, release_key, submit_embedding
from privinfer.teehe.launch import connect_enclave
from privinfer.teehe.protocol import pack_key_release, unpack_ack
from privinfer.teehe.server import ENCLAVE_GONE
from privinfer.teehe.session import NOT_OWNED

from .inprocess import platform
from .teehe_server_proc import running_server, tiny_model

INPUTS = ([1, 7, 23, 5], [3, 4, 5])


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    started = time.time()
    with running_server(tmp_path_factory.mktemp("teehe")) as s:
        s.started = started
        yield s


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-bert")


def _enclave(srv) -> dict:
    return json.loads((srv.folder / "enclave.json").read_text())


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


class _Watched:
    """A client connection that records the kinds it sends."""

    def __init__(self, conn) -> None:
        self.conn, self.kinds = conn, []

    def send(self, kind, meta=None, payload=b""):
        self.kinds.append(kind)
        self.conn.send(kind, meta, payload)

    def recv(self, expect=None):
        return self.conn.recv(expect)


def test_no_key_leaves_without_a_passing_attestation(srv, monkeypatch, tmp_path):
    exported = []
    real = CkksContext.export_secret_key
    monkeypatch.setattr(CkksContext, "export_secret_key", lambda s: exported.append(1) or real(s))
    ep = srv.endpoint()
    _, other_root = platform(
        tmp_path
    )  # another software platform: its root vouches for nothing here
    wrong = Policy(allowed_measurements=frozenset({bytes(48)}), allowed_signers=ANY)
    for trust, why in ((Trust(ep.trust.root, wrong), "measurement"),
                       (Trust.for_root(other_root), "chain|signature|root")):  # fmt: skip
        conn = _Watched(ep.connect())
        with pytest.raises(EvidenceRejected, match=why):
            release_key(conn, HeClient.create(PARAMS_16384), trust)
        conn.conn.close()
        assert conn.kinds == ["ATST"] and not exported


@pytest.fixture(scope="module")
def jobs(srv, model):
    """Two texts at once (two sessions in parallel): one waited for on its connection, one
    submitted, left and fetched later."""
    ep, out = srv.endpoint(), {}

    def one(ids, wait: bool) -> None:
        client = HeClient.create(PARAMS_16384)
        key = bytes(client.ctx.export_secret_key())
        got, fig = submit_embedding(ep, model, ids, wait=wait, client=client)
        if not wait:
            assert fig.bytes_to_client < 1e6  # left before any result came
            got = got.fetch()
        out[wait] = (ids, got, fig, key)

    t = threading.Thread(target=one, args=(INPUTS[0], True))
    t.start()
    one(INPUTS[1], False)
    t.join(600)
    return [out[True], out[False]]


def test_embeddings_equal_plain_as_in_he_mode_with_the_client_away(jobs, model):
    plain = Bert(model.cfg, model.weights, PlainOps())
    for ids, got, fig, _ in jobs:
        want = plain.encode(ids)
        assert got.shape == want.shape
        assert torch.abs(got - want).max() < 5e-3  # the he mode's bound (tests/he/test_ops.py)
        assert torch.nn.functional.cosine_similarity(got, want).min() > 0.999
        assert fig.client_round_trips == 0 and fig.server["rounds"] >= 10
        assert fig.server["enclave"]["refreshes"] == fig.server["rounds"]  # all by the enclave
        # the client sent its key record and input, and received the output: no refresh traffic
        assert fig.bytes_to_server < fig.input_bytes + 1.5e6 and fig.output_bytes > 0


def test_key_canary_is_absent_from_logs_files_and_figures(srv, jobs):
    windows = [
        key[i : i + 32] for _, _, _, key in jobs for i in range(64, len(key) - 32, len(key) // 8)
    ]
    texts = [srv.log_text().encode(), json.dumps([f.server for _, _, f, _ in jobs]).encode()]
    files = [p for p in srv.folder.rglob("*") if p.is_file()]
    tmp = Path(tempfile.gettempdir())
    files += [p for p in tmp.glob("*") if p.is_file() and p.stat().st_mtime >= srv.started]
    for p in files:
        try:
            texts.append(p.read_bytes()[: 64 << 20])
        except OSError:
            continue
    assert len(windows) >= 8 and files
    assert not any(w in t for w in windows for t in texts)


def test_a_fetch_of_an_unknown_or_malformed_job_is_one_sentence(srv):
    for job, why in (("ab" * 16, "No result for that job"), ("../x", "Malformed job id")):
        conn = srv.endpoint().connect()
        conn.send("FTCH", {"job": job, "wait_s": 0})
        with pytest.raises(PeerRefused, match=why):
            conn.recv("RSLT")
        conn.close()


def _session(srv, client: HeClient):
    """Play an HE server on the enclave: attest, release `client`'s key, get its bundle."""
    e = _enclave(srv)
    conn = connect_enclave(load_cluster(srv.folder / "enclave-certs"), e["host"], e["port"])
    nonce = new_nonce()
    conn.send("ATST", {"nonce": nonce.hex()})
    _, meta, quote = conn.recv("ATST")
    sid, pub = bytes.fromhex(meta["session"]), bytes.fromhex(meta["pub"])
    mine, chan = client_channel(pub, nonce, quote, sid)
    body = pack_key_release(client.ctx.params.to_bytes(), client.ctx.export_secret_key())
    conn.send("KREL", {"pub": mine.hex()}, chan.seal(RecordType.DATA, body))
    _, km, data = conn.recv("KREL")
    client.ctx.session_id = unpack_ack(chan.open(data[: km["ack"]])[1])
    blob, bundle, pos = data[km["ack"] :], {}, 0
    for k, n in km["bundle"].items():
        bundle[k], pos = blob[pos : pos + n], pos + n
    return conn, meta["session"], CkksContext.from_public(bundle)


class _Over:
    def __init__(self, conn, session, rewrite=None) -> None:
        self.conn, self.session, self.rewrite, self.sent = conn, session, rewrite, b""

    def refresh(self, payload: bytes) -> bytes:
        self.sent = self.rewrite(payload) if self.rewrite else payload
        self.conn.send("RFSH", {"session": self.session}, self.sent)
        return self.conn.recv("RFSH")[2]


def test_enclave_refuses_other_sessions_and_out_of_window_refreshes(srv):
    client = HeClient.create(PARAMS_16384)
    conn_a, sid_a, server = _session(srv, client)
    ct = server.encrypt(np.linspace(-3, 3, 16), 3)
    conn_b, _, _ = _session(srv, HeClient.create(PARAMS_16384))
    with pytest.raises(PeerRefused, match=NOT_OWNED):  # another session's key is not B's
        Refresher(server, _Over(conn_b, sid_a)).refresh([ct])
    conn_b.close()
    fresh = Refresher(server, _Over(conn_a, sid_a)).refresh([ct])[0]  # A itself is served
    assert server.level(fresh) == server.params.top_level

    def narrow(payload: bytes) -> bytes:  # claim a 60-bit mask where 86 bits were added
        return pack_request(60, 6, unpack_request(payload)[2])

    over = _Over(conn_a, sid_a, narrow)
    with pytest.raises(PeerRefused, match=OUT_OF_BOUND[:40]):
        Refresher(server, over).refresh([ct])
    with pytest.raises(Exception, match=OUT_OF_BOUND[:40]):  # what the he client says
        LocalRefreshClient(client.ctx).refresh(over.sent)
    conn_a.close()


def test_a_killed_server_session_makes_the_enclave_erase_the_key(srv, model):
    enclave_pid = _enclave(srv)["pid"]
    before = set(_children(enclave_pid))
    pending, _ = submit_embedding(srv.endpoint(), model, INPUTS[0], wait=False)
    sessions = [p for p in _children(enclave_pid) if p not in before]
    workers = [p for p in _children(srv.proc.pid) if p != enclave_pid]
    assert len(sessions) == 1 and workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert wait_gone(sessions, 3.0) == []  # the session's process, and its key, are gone
    deadline = time.monotonic() + 3
    while "end: dropped" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "end: dropped" in srv.log_text() and "key erased" in srv.log_text()
    assert alive(enclave_pid)


def test_a_killed_enclave_fails_the_session_within_2_s_and_fetch_says_so(srv, model):
    enclave_pid = _enclave(srv)["pid"]
    pending, _ = submit_embedding(srv.endpoint(), model, INPUTS[1], wait=False)
    got: dict = {}

    def fetch() -> None:
        try:
            pending.fetch(wait_s=30)
        except PeerRefused as exc:
            got["error"], got["at"] = str(exc), time.monotonic()

    t = threading.Thread(target=fetch)
    t.start()
    time.sleep(1.0)  # the session is computing (keys, refreshes)
    killed = time.monotonic()
    os.kill(enclave_pid, signal.SIGKILL)
    t.join(30)
    assert got.get("error", "").endswith(ENCLAVE_GONE)
    assert got["at"] - killed < 2.0
    log = srv.log_text()
    assert ENCLAVE_GONE in log or "refused (EnclaveGone)" in log
