"""A compute party's context: its PeerLink, pairwise PRF keys and cost meter (semi-honest,
honest majority of three parties; keys must be fresh per session and known to one pair each).

Protocol code receives a `Party` and talks to peers only through `Party.exchange`, which sends
all tensors of one round in a single `PeerLink.round` call. Costs are recorded per op-class
label by `Party.op(label)`; nested labels count toward the outermost one only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from privinfer.mpc.prf import PairwiseRandomness
from privinfer.mpc.ring import DEFAULT_FRAC_BITS, bits_to_bytes, bytes_to_ring
from privinfer.net.memory import MemoryNetwork, run_threads
from privinfer.net.peer import PeerError, PeerLink

N_PARTIES = 3


@dataclass
class OpCost:
    """Totals for one op class, as seen by one party."""

    calls: int = 0
    rounds: int = 0
    bytes_sent: int = 0
    wall_s: float = 0.0


class CostMeter:
    """Per-op-class rounds, bytes sent and wall time of one party."""

    def __init__(self) -> None:
        self.by_op: dict[str, OpCost] = {}

    def add(self, label: str, rounds: int, bytes_sent: int, wall_s: float) -> None:
        cost = self.by_op.setdefault(label, OpCost())
        cost.calls += 1
        cost.rounds += rounds
        cost.bytes_sent += bytes_sent
        cost.wall_s += wall_s

    def totals(self) -> dict[str, OpCost]:
        """A copy of the per-op-class totals."""
        return {k: OpCost(v.calls, v.rounds, v.bytes_sent, v.wall_s) for k, v in self.by_op.items()}

    def reset(self) -> None:
        self.by_op.clear()


class Party:
    """Party `pid` of three: holds the link, the PRF streams and the fixed-point precision."""

    def __init__(
        self, link: PeerLink, key_prev: bytes, key_next: bytes, frac_bits: int = DEFAULT_FRAC_BITS
    ) -> None:
        if link.n_parties != N_PARTIES:
            raise ValueError("the replicated-sharing engine needs exactly three parties")
        if not 12 <= frac_bits <= 24:
            raise ValueError("frac_bits must lie in [12, 24]")
        self.link = link
        self.pid = link.party_id
        self.f = frac_bits
        self.rand = PairwiseRandomness(key_prev, key_next)
        self.meter = CostMeter()
        self._depth = 0

    @property
    def next_id(self) -> int:
        return (self.pid + 1) % N_PARTIES

    @property
    def prev_id(self) -> int:
        return (self.pid - 1) % N_PARTIES

    @contextmanager
    def op(self, label: str) -> Iterator[None]:
        """Attribute the rounds and bytes of the enclosed protocol calls to `label`."""
        self._depth += 1
        start = (self.link.stats.rounds, self.link.stats.bytes_sent, time.perf_counter())
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                stats = self.link.stats
                self.meter.add(
                    label,
                    stats.rounds - start[0],
                    stats.bytes_sent - start[1],
                    time.perf_counter() - start[2],
                )

    def exchange(
        self,
        send: dict[int, torch.Tensor],
        recv_shapes: dict[int, tuple[int, ...] | torch.Size],
    ) -> dict[int, torch.Tensor]:
        """One round: send int64 tensors to peers, receive tensors of agreed shapes."""
        outgoing = {peer: bits_to_bytes(t) for peer, t in send.items()}
        got = self.link.round(outgoing, sorted(recv_shapes))
        out = {}
        for peer, shape in recv_shapes.items():
            n = 8 * int(torch.Size(shape).numel())
            if len(got[peer]) != n:
                raise PeerError(peer, "payload has the wrong length")
            out[peer] = bytes_to_ring(got[peer], shape)
        return out

    def send_prev_recv_next(self, t: torch.Tensor) -> torch.Tensor:
        """The resharing round: send `t` to party i-1, receive the same-shaped tensor from i+1."""
        return self.exchange({self.prev_id: t}, {self.next_id: t.shape})[self.next_id]


def fresh_session_keys() -> list[bytes]:
    """Three fresh AES-128 keys; keys[k] belongs to parties k and k+1 (for tests and dry runs:
    in deployment the transport layer agrees them pairwise)."""
    return [os.urandom(16) for _ in range(N_PARTIES)]


def run_local(
    program: Callable[[Party], Any],
    frac_bits: int = DEFAULT_FRAC_BITS,
    keys: list[bytes] | None = None,
    timeout_s: float = 60.0,
) -> list[Any]:
    """Run `program(party)` for three in-process parties over a MemoryNetwork; returns the three
    results. A failing party closes its link so the others stop with PeerError."""
    keys = keys if keys is not None else fresh_session_keys()
    net = MemoryNetwork(N_PARTIES, timeout_s=timeout_s)

    def make(i: int) -> Callable[[], Any]:
        def body() -> Any:
            party = Party(net.links[i], keys[(i - 1) % N_PARTIES], keys[i], frac_bits)
            try:
                return program(party)
            except BaseException:
                net.links[i].close()
                raise

        return body

    return run_threads([make(i) for i in range(N_PARTIES)], timeout_s=timeout_s * 4)
