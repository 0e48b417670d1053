"""Deployed MPC faults (real party processes, loopback TLS): a too-long prompt, an unreachable
party, a party killed mid-generation, mixed or tampered share stores. Each ends in one clear
sentence within a timeout, and every party process exits."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from privinfer.errors import InputError
from privinfer.models.generate import GenerationStats
from privinfer.models.ops import Sampler
from privinfer.modes import Request
from privinfer.modes.mpc import MODE as MPC
from privinfer.mpc.remote_client import MpcClient
from privinfer.mpc.session import MpcSessionError
from privinfer.mpc.store import PartyStore, ShareStoreError, share_model
from privinfer.net.cluster import free_ports, init_cluster

from .test_deploy_roles import start_parties, stop_parties, tiny_deployment


def _client_gen(lm, cluster: Path, n: int, **kw):
    client = MpcClient(str(cluster), **kw)
    return client.generate(
        "tiny",
        lm.cfg,
        lm.prompt_ids("hello"),
        sampler=Sampler(),
        max_new_tokens=n,
        stop_ids=(),
        stats=GenerationStats(),
    )


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and len(msg) < 300
    return msg


def test_prompt_longer_than_context_is_refused_before_any_party_starts(tmp_path):
    from privinfer.models.tiny import tiny_llama_config

    class Model:
        cfg = tiny_llama_config()
        name = "tiny"

    gen = MPC.generate(Model(), Request([1] * 300, Sampler(), 4), GenerationStats())
    with pytest.raises(InputError, match="more than the model's context"):
        next(gen)


def test_unreachable_party_fails_fast(tmp_path):
    cluster = init_cluster(tmp_path / "c", [f"127.0.0.1:{p}" for p in free_ports(4)])
    t0 = time.monotonic()
    with pytest.raises(MpcSessionError, match="could not reach the MPC parties") as exc:
        list(_client_gen(object.__new__(_Tiny), cluster.path, 2, connect_timeout_s=2.0))
    assert time.monotonic() - t0 < 2.0 + 20  # gives up after its 2 s, no hang (load-proof)
    _one_line(exc.value)


class _Tiny:
    """Just enough of a LanguageModel for the client (config and prompt ids)."""

    @property
    def cfg(self):
        from privinfer.models.tiny import tiny_llama_config

        return tiny_llama_config()

    def prompt_ids(self, text: str) -> list[int]:
        return list(text.encode())


def test_party_killed_mid_generation(tmp_path):
    lm, cluster, stores, _ = tiny_deployment(tmp_path)
    procs = start_parties(
        cluster, [stores / f"party-{i}" for i in range(3)], tmp_path, sessions="1", timeout="10"
    )
    try:
        gen = _client_gen(lm, cluster, 50, connect_timeout_s=60, timeout_s=10)
        first = next(gen)
        assert isinstance(first, int)
        os.kill(procs[1].pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(MpcSessionError, match="party 1") as exc:
            for _ in gen:
                pass
        assert time.monotonic() - t0 < 10 + 20  # within the 10 s timeouts plus load slack
        _one_line(exc.value)
        codes = [p.wait(20) for p in procs]
        assert codes[0] != 0 and codes[2] != 0 and codes[1] == -signal.SIGKILL
        for i in (0, 2):
            log = (tmp_path / f"party-{i}.log").read_text()
            assert "session aborted" in log, log
            assert "Traceback" not in log
    finally:
        stop_parties(procs)


def test_mixed_share_sets_are_refused_and_parties_exit(tmp_path):
    lm, cluster, stores, _ = tiny_deployment(tmp_path)
    share_model(lm, "tiny", tmp_path / "other")
    mixed = [stores / "party-0", stores / "party-1", tmp_path / "other" / "party-2"]
    procs = start_parties(cluster, mixed, tmp_path, sessions="1")
    try:
        with pytest.raises(MpcSessionError, match="different models or share sets") as exc:
            list(_client_gen(lm, cluster, 2, connect_timeout_s=60, timeout_s=10))
        _one_line(exc.value)
        assert [p.wait(20) for p in procs] == [0, 0, 0]
    finally:
        stop_parties(procs)


def test_tampered_or_misplaced_store_is_refused(tmp_path):
    lm, _, stores, _ = tiny_deployment(tmp_path)
    with pytest.raises(ShareStoreError, match="party 1's shares, not party 2's"):
        PartyStore(stores / "party-1", 2)
    share_model(lm, "tiny", tmp_path / "bound", cluster_id=b"\x01" * 16)
    bound = PartyStore(tmp_path / "bound" / "party-0", 0)
    bound.check_cluster(b"\x01" * 16)
    with pytest.raises(ShareStoreError, match="made for another cluster"):
        bound.check_cluster(b"\x02" * 16)
    victim = sorted((stores / "party-2").glob("w*.bin"))[0]
    data = bytearray(victim.read_bytes())
    data[0] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(ShareStoreError, match="does not match its manifest") as exc:
        PartyStore(stores / "party-2", 2)
    _one_line(exc.value)
