"""The in-process link (bytes, rounds, timeouts), the cost meter and PRF streams."""

from __future__ import annotations

import pytest
import torch
from tests.mpc.helpers import KEYS

from privinfer.mpc.prf import KeyStream, PairwiseRandomness
from privinfer.mpc.protocols import arith
from privinfer.mpc.runtime import Party, run_local
from privinfer.mpc.shares import share_from
from privinfer.net.memory import MemoryNetwork, run_threads
from privinfer.net.peer import PeerError


def test_memory_link_counts_bytes_and_rounds():
    net = MemoryNetwork(3, timeout_s=5)

    def party(i):
        def body():
            link = net.links[i]
            others = [j for j in range(3) if j != i]
            got = link.round({j: bytes([i]) * (10 + i) for j in others}, others)
            return link.stats, got

        return body

    results = run_threads([party(i) for i in range(3)])
    for i, (stats, got) in enumerate(results):
        assert stats.rounds == 1 and stats.messages_sent == 2
        assert stats.bytes_sent == 2 * (10 + i)
        assert {j: len(v) for j, v in got.items()} == {j: 10 + j for j in range(3) if j != i}


def test_memory_link_timeout_raises_peer_error_without_data():
    net = MemoryNetwork(3, timeout_s=0.05)
    with pytest.raises(PeerError) as exc:
        net.links[0].recv(1)
    assert exc.value.peer == 1 and "timed out" in str(exc.value)


def test_failing_party_stops_the_others_quickly():
    def program(p: Party):
        if p.pid == 2:
            raise RuntimeError("boom")
        x = share_from(p, 0, torch.ones(3) if p.pid == 0 else None, (3,))
        return arith.mul(p, x, x)

    with pytest.raises((RuntimeError, PeerError)):
        run_local(program, keys=KEYS, timeout_s=5)


def test_prf_streams_agree_pairwise_and_zero_shares_sum_to_zero():
    rands = [PairwiseRandomness(KeyStream(KEYS[(i - 1) % 3]), KeyStream(KEYS[i])) for i in range(3)]
    zs = [r.zero_share((1000,)) for r in rands]
    assert torch.equal(zs[0] + zs[1] + zs[2], torch.zeros(1000, dtype=torch.int64))
    xs = [r.zero_share_xor((1000,)) for r in rands]
    assert torch.equal(xs[0] ^ xs[1] ^ xs[2], torch.zeros(1000, dtype=torch.int64))
    pairs = [r.random_replicated((5,)) for r in rands]
    for i in range(3):  # party i's second component is party i+1's first
        assert torch.equal(pairs[i][1], pairs[(i + 1) % 3][0])
    stream = KeyStream(KEYS[0])
    assert KEYS[0].hex() not in repr(stream) and repr(KEYS[0]) not in repr(stream)
    with pytest.raises(ValueError):
        KeyStream(b"short")


def test_cost_meter_per_op_class():
    def program(p: Party):
        x = share_from(p, 0, torch.ones(100) if p.pid == 0 else None, (100,))
        with p.op("outer"):
            arith.mul(p, x, x)
        arith.mul(p, x, x)
        return p.meter.totals()

    totals = run_local(program, keys=KEYS)
    for t in totals:
        # nested protocol labels count toward the outermost one
        assert t["outer"].rounds == 3 and t["mul"].rounds == 3 and "trunc" not in t
        assert t["outer"].bytes_sent == t["mul"].bytes_sent == 100 * 8 * 3
        assert t["share"].rounds == 1


def test_share_repr_hides_values():
    def program(p: Party):
        x = share_from(p, 0, torch.tensor([123456.0]) if p.pid == 0 else None, (1,))
        return repr(x)

    for r in run_local(program, keys=KEYS):
        assert "123456" not in r and "tensor" not in r
