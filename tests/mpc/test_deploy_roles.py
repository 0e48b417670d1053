"""Deployed MPC roles with real party processes over loopback TLS (tiny LLaMA): stores hold no
plaintext weight, greedy tokens equal plain, the client receives only token shares, parties
never see the prompt (canary), Gumbel sampling draws its noise from the parties (a client seed
does not fix it; the client sends only its temperature), and a request for another
model or share set is refused with one clear sentence."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import privinfer
from privinfer.models.generate import GenerationStats
from privinfer.models.ops import Sampler
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder
from privinfer.mpc.remote_client import MpcClient
from privinfer.mpc.ring import encode
from privinfer.mpc.session import MpcSessionError
from privinfer.mpc.store import prepared_weights, share_model, stored_components
from privinfer.net.cluster import free_ports, init_cluster
from privinfer.net.lifetime import spawn

CANARY = "zq-canary-5e1f"


def start_parties(cluster: Path, stores: list[Path], logs: Path, **opts: str) -> list:
    procs = []
    for i, store in enumerate(stores):
        cmd = [sys.executable, "-m", "privinfer.mpc.party_main", "--id", str(i)]
        cmd += ["--cluster", str(cluster), "--store", str(store), "--timeout", "20"]
        for k, v in opts.items():
            cmd += [f"--{k.replace('_', '-')}", v]
        with open(logs / f"party-{i}.log", "wb") as f:
            procs.append(spawn(cmd, stdout=f, stderr=subprocess.STDOUT))
    return procs


def stop_parties(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def tiny_deployment(tmp: Path, seed: int = 5) -> tuple[object, Path, Path, str]:
    cfg = tiny_llama_config()
    lm = privinfer.load(str(write_hf_folder(tmp / "model", cfg, tiny_llama_weights(cfg, seed))))
    cluster = init_cluster(tmp / "cluster", [f"127.0.0.1:{p}" for p in free_ports(4)])
    share_set = share_model(lm, "tiny", tmp / "stores")
    return lm, cluster.path, tmp / "stores", share_set


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    lm, cluster, stores, share_set = tiny_deployment(tmp)
    procs = start_parties(cluster, [stores / f"party-{i}" for i in range(3)], tmp)
    yield lm, cluster, stores, share_set, tmp
    stop_parties(procs)


def _generate(lm, cluster: Path, prompt: str, sampler: Sampler, n: int = 5, **kw):
    client = MpcClient(str(cluster), connect_timeout_s=60, timeout_s=30, **kw)
    stats = GenerationStats()
    ids = lm.prompt_ids(prompt)
    toks = list(
        client.generate(
            "tiny", lm.cfg, ids, sampler=sampler, max_new_tokens=n, stop_ids=(), stats=stats
        )
    )
    return toks, client, stats


def test_stores_hold_no_plaintext_weight(deployed):
    lm, _, stores, share_set, _ = deployed
    real = {n: (k, t) for n, k, t in prepared_weights(lm)}
    for i in range(3):
        folder = stores / f"party-{i}"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for f in folder.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["share_set_id"] == share_set and manifest["model_id"] == "tiny"
        files = list(stored_components(folder))
        assert (len(files) > 0) == (i != 0)  # party 0 holds only seeds
        for name, raw in files:
            kind, w = real[name]
            w = w.double().T.contiguous() if kind == "linear" else w.double()
            enc = encode(w, 16).numpy().reshape(-1)
            assert np.mean(raw == enc) < 0.01
            # the stored component decodes to noise, uncorrelated with the weight
            noise = raw.astype(np.float64) / 2.0**63
            r = np.corrcoef(noise, enc.astype(np.float64))[0, 1]
            assert abs(r) < 5 / np.sqrt(raw.size)  # 5 sigma of a null correlation
        seeds = (folder / "seeds.bin").read_bytes()
        assert len(seeds) == (64 if i == 0 else 32)


def _sessions_done(logs: Path, i: int) -> int:
    return (logs / f"party-{i}.log").read_text().count(" done: ")


def test_greedy_equals_plain_and_client_sees_only_token_shares(deployed):
    lm, cluster, _, _, tmp = deployed
    prompt = f"say {CANARY} twice"
    plain = lm.generate(prompt, max_new_tokens=5)
    served = [_sessions_done(tmp, i) for i in range(3)]
    toks, client, stats = _generate(lm, cluster, prompt, Sampler(), n=5)
    assert toks == plain.token_ids
    assert stats.prefill_s > 0 and len(stats.token_s) == 4
    sizes = [n for _, n in client.received]
    # 3 JSON replies, then per party per token one 9-byte share and the party's 16-byte rounds
    # and bytes counters (session.COUNTERS: public, shape-only), then 3 JSON stats
    assert sizes[3:-3] == [9 + 16] * (3 * 5)
    assert all(c["rounds"] > 0 and c["bytes_sent"] > 0 for c in client.live.values())
    for pid, st in client.report["parties"].items():
        assert st["prefill"]["rounds"] > 0 and len(st["tokens"]) == 4
        got = [n for p, n in client.received if p == int(pid)]
        assert st["bytes_to_client"] == sum(got[:-1])  # all but the stats message itself
    # wait until each party has logged this session's end, however loaded the machine: the
    # canary check must read complete logs
    deadline = time.monotonic() + 60
    while any(_sessions_done(tmp, i) <= served[i] for i in range(3)):
        assert time.monotonic() < deadline, "a party never logged the end of its session"
        time.sleep(0.05)
    for i in range(3):
        log = (tmp / f"party-{i}.log").read_text()
        assert CANARY not in log and "say" not in log
        assert "session" in log  # it did serve


def test_gumbel_noise_is_the_parties_not_the_client_seed(deployed):
    lm, cluster, _, _, _ = deployed
    a, ca, _ = _generate(lm, cluster, "pick", Sampler(temperature=25.0, seed=3), n=6)
    b, _, _ = _generate(lm, cluster, "pick", Sampler(temperature=25.0, seed=3), n=6)
    _, cg, _ = _generate(lm, cluster, "pick", Sampler(), n=6)
    assert a != b  # same seed, fresh session keys: fresh noise
    assert all(0 <= t < lm.cfg.vocab_size for t in a + b)
    for pid in ("0", "1", "2"):  # the client's only sampling input: T, 16 bytes per party
        sampled = ca.report["parties"][pid]["bytes_from_client"]
        extra = len(b"true") - len(b"false")  # the request's "sample" flag
        assert sampled - cg.report["parties"][pid]["bytes_from_client"] == 16 + extra


def test_request_for_other_model_or_share_set_is_refused(deployed):
    lm, cluster, _, share_set, _ = deployed
    client = MpcClient(str(cluster), connect_timeout_s=30, timeout_s=20)
    stats = GenerationStats()
    with pytest.raises(MpcSessionError, match="holds shares of model 'tiny'") as exc:
        list(
            client.generate(
                "smollm2-135m",
                lm.cfg,
                [1, 2, 3],
                sampler=Sampler(),
                max_new_tokens=2,
                stop_ids=(),
                stats=stats,
            )
        )
    assert "\n" not in str(exc.value)
    other = "0" * 32
    with pytest.raises(MpcSessionError, match="share set"):
        _generate(lm, cluster, "x", Sampler(), n=2, share_set=other)
    toks, _, _ = _generate(lm, cluster, "x", Sampler(), n=2, share_set=share_set)
    assert len(toks) == 2  # the parties keep serving after a refusal


def test_parties_never_receive_token_ids(deployed):
    """What a party receives from the client is only share-sized: the one-hot shares of each
    forward pass and the continue byte; its logs carry counters only."""
    lm, cluster, _, _, _ = deployed
    toks, client, _ = _generate(lm, cluster, "abc", Sampler(), n=3)
    ids = lm.prompt_ids("abc")
    vocab = lm.cfg.vocab_size
    for st in client.report["parties"].values():
        req = st["bytes_from_client"] - 2 * 8 * vocab * (len(ids) + 2) - 2  # 2 continue bytes
        assert 0 < req < 400  # the JSON request: model id, lengths, flags
    assert os.environ.get("PRIVINFER_DEBUG") is None
    assert torch.get_num_threads() >= 1


class _WeightTwoClient(MpcClient):
    """A malicious client: its last prompt row has weight 2 (the embedding would be 2 x a row)."""

    def _send_onehot(self, link, ids, vocab):  # type: ignore[no-untyped-def]
        from privinfer.mpc.shares import client_make_shares

        onehot = torch.zeros(len(ids), vocab, dtype=torch.float64)
        onehot[torch.arange(len(ids)), torch.as_tensor(list(ids))] = 1.0
        onehot[-1, ids[-1]] = 2.0
        self._send_all(link, client_make_shares(onehot, 0))


def test_parties_refuse_a_client_input_that_is_not_one_hot_and_keep_serving(deployed):
    lm, cluster, _, _, tmp = deployed
    bad = _WeightTwoClient(str(cluster), connect_timeout_s=60, timeout_s=30)
    with pytest.raises(MpcSessionError, match="refused the session: the client's input is not"):
        list(
            bad.generate(
                "tiny",
                lm.cfg,
                lm.prompt_ids("abc"),
                sampler=Sampler(),
                max_new_tokens=2,
                stop_ids=(),
                stats=GenerationStats(),
            )
        )
    toks, _, _ = _generate(lm, cluster, "abc", Sampler(), n=2)
    assert len(toks) == 2  # the parties keep serving honest clients
    for i in range(3):
        assert "refused the client's input" in (tmp / f"party-{i}.log").read_text()
