"""A compute party's context: its PeerLink, correlated-randomness provider (`prf`, over pairwise
PRF keys) and cost meter (semi-honest, honest majority of three parties; keys must be fresh per
session and known to one pair each).

Protocol code receives a `Party` and talks to peers only through `Party.exchange`, which sends
all tensors of one round in a single `PeerLink.round` call. Costs are recorded per op-class
label by `Party.op(label)`; nested labels count toward the outermost one only.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from privinfer.models.costs import CostReport
from privinfer.mpc.prf import PairwiseRandomness
from privinfer.mpc.ring import DEFAULT_FRAC_BITS, bits_to_bytes, bytes_to_ring
from privinfer.net.memory import MemoryNetwork, run_threads
from privinfer.net.peer import PeerError, PeerLink

N_PARTIES = 3
CHILD_CHUNK_BYTES = 1 << 12  # a `Party.parallel` sub-protocol draws little: small AES buffer


class Party:
    """Party `pid` of three: holds the link, its correlated-randomness provider `rand` (the two
    pairwise key streams, see `prf`) and the fixed-point precision."""

    def __init__(
        self, link: PeerLink, rand: PairwiseRandomness, frac_bits: int = DEFAULT_FRAC_BITS
    ) -> None:
        if link.n_parties != N_PARTIES:
            raise ValueError("the replicated-sharing engine needs exactly three parties")
        if not 12 <= frac_bits <= 24:
            raise ValueError("frac_bits must lie in [12, 24]")
        self.link = link
        self.pid = link.party_id
        self.f = frac_bits
        self.rand = rand
        self.meter = CostReport()
        self._depth = 0

    @property
    def next_id(self) -> int:
        return (self.pid + 1) % N_PARTIES

    @property
    def prev_id(self) -> int:
        return (self.pid - 1) % N_PARTIES

    def op(self, label: str) -> _OpScope:
        """Attribute the rounds and bytes of the enclosed protocol calls to `label` (a context
        manager; only the outermost scope records)."""
        return _OpScope(self, label)

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
            if len(got[peer]) != 8 * math.prod(shape):
                raise PeerError(peer, "payload has the wrong length")
            out[peer] = bytes_to_ring(got[peer], shape)
        return out

    def send_prev_recv_next(self, t: torch.Tensor) -> torch.Tensor:
        """The resharing round: send `t` to party i-1, receive the same-shaped tensor from i+1
        (`exchange`'s messages and checks, without its per-peer dictionaries: most rounds are
        this one)."""
        nxt = (self.pid + 1) % N_PARTIES
        got = self.link.round({(self.pid - 1) % N_PARTIES: t.numpy().tobytes()}, [nxt])[nxt]
        if len(got) != 8 * t.numel():
            raise PeerError(nxt, "payload has the wrong length")
        return bytes_to_ring(got, t.shape)

    def parallel(self, *programs: Callable[[Party], Any]) -> list[Any]:
        """Run independent sub-protocols with merged rounds: round r of every still-running
        program travels in one message per peer, so the block takes max(rounds), not the sum.
        Each program gets a child party with fresh PRF keys drawn from this party's keys (the
        same draws at every party), and runs in its own thread; costs count to the caller's op.
        Every program's round count must not depend on secret data (true of all protocols here).
        """
        merger = _RoundMerger(self, len(programs))
        children = [_ChildParty(self, merger, k) for k in range(len(programs))]
        results: list[Any] = [None] * len(programs)
        errors: list[BaseException | None] = [None] * len(programs)

        def run(k: int) -> None:
            try:
                results[k] = programs[k](children[k])
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors[k] = exc
            finally:
                merger.finish()

        threads = [
            threading.Thread(target=run, args=(k,), daemon=True) for k in range(1, len(programs))
        ]
        for t in threads:
            t.start()
        run(0)  # the first program runs in the caller's thread: one thread start fewer
        for t in threads:
            t.join()
        for err in errors:
            if err is not None:
                raise err
        return results


class _OpScope:
    """`Party.op`'s context manager (a plain class: cheaper than a generator-based one, and
    entered a few thousand times per decoded token)."""

    __slots__ = ("party", "label", "start")

    def __init__(self, party: Party, label: str) -> None:
        self.party, self.label = party, label

    def __enter__(self) -> None:
        party = self.party
        party._depth += 1
        if party._depth == 1:
            stats = party.link.stats
            self.start = (stats.rounds, stats.bytes_sent, time.perf_counter())

    def __exit__(self, *exc: object) -> None:
        party = self.party
        party._depth -= 1
        if party._depth == 0:
            stats, start = party.link.stats, self.start
            party.meter.record(
                self.label,
                rounds=stats.rounds - start[0],
                bytes_sent=stats.bytes_sent - start[1],
                wall_s=time.perf_counter() - start[2],
            )


class _ChildParty(Party):
    """A sub-protocol's view of its parent party inside `Party.parallel`."""

    def __init__(self, parent: Party, merger: _RoundMerger, index: int) -> None:
        self.link, self.pid, self.f = parent.link, parent.pid, parent.f
        self.rand = parent.rand.child(CHILD_CHUNK_BYTES)
        self.meter = CostReport()
        self._depth = 1  # costs are recorded by the parent's enclosing op
        self._merger, self._index = merger, index

    def exchange(
        self,
        send: dict[int, torch.Tensor],
        recv_shapes: dict[int, tuple[int, ...] | torch.Size],
    ) -> dict[int, torch.Tensor]:
        return self._merger.exchange(self._index, send, recv_shapes)

    def send_prev_recv_next(self, t: torch.Tensor) -> torch.Tensor:
        return self.exchange({self.prev_id: t}, {self.next_id: t.shape})[self.next_id]


class _RoundMerger:
    """Collects one round from every running child, sends it as one parent round, splits."""

    def __init__(self, parent: Party, n: int) -> None:
        self.parent, self.active = parent, n
        self.cond = threading.Condition()
        self.pending: dict[int, tuple[dict[int, torch.Tensor], dict[int, Any]]] = {}
        self.results: dict[int, dict[int, torch.Tensor]] = {}
        self.epoch = 0
        self.error: BaseException | None = None

    def exchange(
        self, index: int, send: dict[int, torch.Tensor], recv: dict[int, Any]
    ) -> dict[int, torch.Tensor]:
        with self.cond:
            if self.error is not None:
                raise self.error
            self.pending[index] = (send, recv)
            epoch = self.epoch
            self._flush_if_complete()
            while self.epoch == epoch:
                self.cond.wait()
            if self.error is not None:
                raise self.error
            return self.results.pop(index)

    def finish(self) -> None:
        with self.cond:
            self.active -= 1
            self._flush_if_complete()

    def _flush_if_complete(self) -> None:
        if not self.pending or len(self.pending) < self.active:
            return
        items = sorted(self.pending.items())
        self.pending = {}
        try:
            send = {
                peer: torch.cat([s[peer].reshape(-1) for _, (s, _) in items if peer in s])
                for peer in sorted({p for _, (s, _) in items for p in s})
            }
            sizes = {
                peer: sum(int(torch.Size(r[peer]).numel()) for _, (_, r) in items if peer in r)
                for peer in sorted({p for _, (_, r) in items for p in r})
            }
            got = self.parent.exchange(send, {peer: (n,) for peer, n in sizes.items()})
            offset = dict.fromkeys(got, 0)
            for index, (_, r) in items:
                out = {}
                for peer, shape in r.items():
                    n = int(torch.Size(shape).numel())
                    out[peer] = got[peer][offset[peer] : offset[peer] + n].reshape(shape)
                    offset[peer] += n
                self.results[index] = out
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting child
            self.error = exc
        self.epoch += 1
        self.cond.notify_all()


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
            rand = PairwiseRandomness.buffered(keys[(i - 1) % N_PARTIES], keys[i])
            party = Party(net.links[i], rand, frac_bits)
            try:
                return program(party)
            except BaseException:
                net.links[i].close()
                raise

        return body

    return run_threads([make(i) for i in range(N_PARTIES)], timeout_s=timeout_s * 4)
