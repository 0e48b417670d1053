"""HE client and server over mutual TLS: errors are refused clearly and the server keeps serving."""

from pathlib import Path

import pytest
import torch

from privinfer.api import EmbeddingModel
from privinfer.engines.plain import PlainOps
from privinfer.errors import InputError
from privinfer.he.ckks import PARAMS_16384, CkksParams
from privinfer.he.client import run_client_session
from privinfer.he.server import pack_bundle
from privinfer.he.session import HeClient
from privinfer.he.transport import connect
from privinfer.models.bert import Bert

from .he_server_proc import running_server
from .test_ops import _tiny_bert

IDS = [1, 7, 23, 5]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg, weights = _tiny_bert()
    model = EmbeddingModel("tiny-bert", cfg, weights, None, Path("."))
    with running_server(tmp_path_factory.mktemp("he-server")) as srv:
        yield model, srv.cluster, srv.port


def _rows(model, ids):
    return torch.zeros(len(ids), model.cfg.hidden_size, dtype=torch.float64)  # never decrypted


def test_insecure_parameters_are_refused(server):
    model, cluster, port = server
    client = HeClient.create(PARAMS_16384)
    bundle = client.public_bundle()
    bundle["params"] = CkksParams(8192, (60, 60, 60, 60), 40).to_bytes()
    conn = connect(cluster, "127.0.0.1", port)
    conn.send("HELO", {"task": "embed", "rows": 4}, pack_bundle(bundle))
    with pytest.raises(InputError, match="insecure"):
        conn.recv()
    conn.close()


def test_too_long_input_is_refused(server):
    model, cluster, port = server
    client = HeClient.create(PARAMS_16384)
    conn = connect(cluster, "127.0.0.1", port)
    with pytest.raises(InputError, match="tokens per text"):
        run_client_session(conn, client, {"task": "embed", "rows": 40}, _rows(model, [0] * 40))
    conn.close()


def test_ciphertexts_of_another_session_are_refused(server):
    model, cluster, port = server
    client, other = HeClient.create(PARAMS_16384), HeClient.create(PARAMS_16384)
    client.encrypt_rows = other.encrypt_rows  # uploads under another key
    conn = connect(cluster, "127.0.0.1", port)
    with pytest.raises(InputError, match="another HE session"):
        run_client_session(conn, client, {"task": "embed", "rows": 4}, _rows(model, IDS))
    conn.close()


def test_server_still_serves_a_correct_embedding(server):
    from privinfer.he.session import client_rows

    model, cluster, port = server
    client = HeClient.create(PARAMS_16384)
    conn = connect(cluster, "127.0.0.1", port)
    done = run_client_session(conn, client, {"task": "embed", "rows": 4}, client_rows(model, IDS))
    conn.close()
    plain = Bert(model.cfg, model.weights, PlainOps()).encode(IDS)
    assert done["rounds"] > 0
    assert torch.nn.functional.cosine_similarity(client.output, plain).item() > 0.999


def test_malformed_bundle_is_refused(server):
    model, cluster, port = server
    conn = connect(cluster, "127.0.0.1", port)
    conn.send("HELO", {"task": "embed", "rows": 4}, b"\x05\x00\x00\x00not a bundle")
    with pytest.raises(InputError, match="Malformed"):
        conn.recv()
    conn.close()
