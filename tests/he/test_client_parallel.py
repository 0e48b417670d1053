"""`embed_remote` runs several texts as concurrent sessions and keeps their order."""

import contextlib
import threading
import time

import torch

from privinfer.he import client as he_client


def test_texts_run_as_concurrent_sessions_in_order(monkeypatch):
    running, peak, lock = [0], [0], threading.Lock()

    def fake_one(model, ids, endpoint):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        figures = {"rounds": 1, "bytes_to_server": 10, "bytes_to_client": len(ids)}
        return torch.full((1, 2), float(ids[0])), figures

    @contextlib.contextmanager
    def fake_server(model, server, sessions):
        yield (None, "127.0.0.1", 1)

    monkeypatch.setattr(he_client, "_embed_one", fake_one)
    monkeypatch.setattr(he_client, "_server_for", fake_server)
    vecs, stats = he_client.embed_remote(None, [[3], [1, 1], [2, 2, 2]], None, parallel=2)
    assert vecs[:, 0].tolist() == [3.0, 1.0, 2.0]
    assert stats == {"rounds": 3, "bytes_to_server": 30, "bytes_to_client": 6}
    assert peak[0] == 2  # two sessions at once, never more than asked
    vecs, _ = he_client.embed_remote(None, [[5]], None)
    assert vecs.tolist() == [[5.0, 5.0]]
