"""A malicious client against the parties' one-hot input check (in-process parties): rows of
weight 2, fractional or scaled rows, mixes that sum to 1, a zero row and inconsistent share
copies are all refused by all three parties in one round; honest one-hot rows pass and embed
to the table's rows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from privinfer.mpc.client import LocalClient
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.protocols.onehot import CHECKS, InputCheckError
from privinfer.mpc.ring import bits_to_bytes, bytes_to_ring
from privinfer.mpc.runtime import Party, run_local
from privinfer.mpc.shares import client_make_shares, reveal, share_from

V, D = 8, 4
TABLE = torch.arange(V * D, dtype=torch.float64).reshape(V, D) / 8


class CraftedClient(LocalClient):
    """Hands each party the payload a malicious client made (ring values of its choice)."""

    def __init__(self, payloads: list[bytes]) -> None:
        super().__init__(16)
        self.payloads = payloads

    def token_input(self, party_id: int, ids, vocab: int) -> bytes:  # type: ignore[no-untyped-def]
        return self.payloads[party_id]


def _onehot(ids: list[int]) -> torch.Tensor:
    x = torch.zeros(len(ids), V, dtype=torch.int64)
    x[torch.arange(len(ids)), torch.tensor(ids)] = 1
    return x


def _raw(ring: torch.Tensor) -> list[bytes]:
    """Consistent replicated shares of any ring tensor, as a client of its choice makes them."""
    r0 = torch.randint(-(2**62), 2**62, ring.shape, dtype=torch.int64)
    r1 = torch.randint(-(2**62), 2**62, ring.shape, dtype=torch.int64)
    comps = (r0, r1, ring - r0 - r1)
    return [bits_to_bytes(torch.stack((comps[i], comps[(i + 1) % 3]))) for i in range(3)]


def _run(payloads: list[bytes], rows: int) -> list[object]:
    """Each party embeds the crafted input; returns its revealed embedding or its refusal."""
    client = CraftedClient(payloads)

    def program(p: Party) -> object:
        ops = MpcOps(p, client)
        table = share_from(p, 0, TABLE if p.pid == 0 else None, (V, D))
        try:
            y = ops.embed(table, [0] * rows)
        except InputCheckError as exc:
            return exc
        return reveal(p, y)

    return run_local(program, timeout_s=30.0)


def test_honest_one_hot_rows_pass_and_embed_to_table_rows() -> None:
    ids = [3, 0, 7]
    out = _run(client_make_shares(_onehot(ids).double(), 0), len(ids))
    for y in out:
        assert isinstance(y, torch.Tensor)
        assert torch.allclose(y, TABLE[ids], atol=1e-4)


def _weight_two() -> torch.Tensor:
    x = _onehot([1, 2])
    x[0, 1] = 2
    return x


def _fraction() -> torch.Tensor:  # 0.5 e_1 + 0.5 e_2 at 16 fractional bits, as the ring holds it
    x = torch.zeros(1, V, dtype=torch.int64)
    x[0, 1] = x[0, 2] = 1 << 15
    return x


def _scaled_mix() -> torch.Tensor:  # 3 e_1 - 2 e_2: the row sum is 1, the entries are not bits
    x = torch.zeros(1, V, dtype=torch.int64)
    x[0, 1], x[0, 2] = 3, -2
    return x


def _wrapping_mix() -> torch.Tensor:  # 2^63 e_1 + (1 - 2^63) e_2: sum 1, e = 2^63 (valuation 63)
    x = torch.zeros(1, V, dtype=torch.int64)
    x[0, 1] = -(2**63)
    x[0, 2] = -(2**63) + 1  # 1 - 2^63 = 2^63 + 1 mod 2^64
    return x


def _two_hot() -> torch.Tensor:
    x = _onehot([4])
    x[0, 5] = 1
    return x


def _zero_row() -> torch.Tensor:
    x = _onehot([1, 2])
    x[1] = 0
    return x


@pytest.mark.parametrize(
    "make",
    [_weight_two, _fraction, _scaled_mix, _wrapping_mix, _two_hot, _zero_row],
    ids=["weight-2", "fraction", "scaled-mix", "wrapping-mix", "two-hot", "zero-row"],
)
def test_every_party_refuses_a_row_that_is_not_one_hot(make: Callable[[], torch.Tensor]) -> None:
    x = make()
    out = _run(_raw(x), x.shape[0])
    assert all(isinstance(e, InputCheckError) for e in out), out
    assert all("not one-hot" in str(e) for e in out)


def test_every_party_refuses_inconsistent_copies_of_a_component() -> None:
    """Parties 1 and 2 both hold component 2; party 1's copy is moved from row 0 to row 1."""
    x = _onehot([1, 2])
    payloads = _raw(x)
    pair = bytes_to_ring(payloads[1], (2, *x.shape)).clone()  # party 1 holds (x1, x2)
    pair[1, 0, 1] -= 1
    pair[1, 1, 1] += 1  # its view alone still sums to a valid-looking input
    payloads[1] = bits_to_bytes(pair)
    out = _run(payloads, x.shape[0])
    assert all(isinstance(e, InputCheckError) and "differ" in str(e) for e in out), out


def test_the_check_costs_one_round_per_input_and_one_per_session() -> None:
    client = LocalClient(16)

    def program(p: Party) -> tuple[int, int]:
        ops = MpcOps(p, client)
        table = share_from(p, 0, TABLE if p.pid == 0 else None, (V, D))
        ops.embed(table, [1, 2, 3])
        first = p.meter.totals()["input_check"]
        r1, b1 = first.rounds, first.bytes_sent
        ops.embed(table, [4])
        second = p.meter.totals()["input_check"]
        return r1, second.rounds - r1, b1, second.bytes_sent - b1

    for r1, r2, b1, b2 in run_local(program, timeout_s=30.0):
        assert (r1, r2) == (2, 1)  # coin + check, then check only
        assert b2 == 2 * 8 * (1 + CHECKS + 8)
        assert b1 == 8 * 2 + 2 * 8 * (3 + CHECKS + 8)  # coin: one 2-word share sent
