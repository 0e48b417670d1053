"""In-process PeerLink for tests and dry runs: parties are threads joined by queues; no security
(everything shares one address space), but it counts bytes and rounds exactly like a real link.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from privinfer.net.peer import LinkStats, PeerError


class MemoryNetwork:
    """Queues between every ordered pair of `n_parties` in-process parties."""

    def __init__(self, n_parties: int = 3, timeout_s: float = 30.0) -> None:
        self.n_parties = n_parties
        self.timeout_s = timeout_s
        self._queues: dict[tuple[int, int], queue.Queue[bytes | None]] = {
            (a, b): queue.Queue() for a in range(n_parties) for b in range(n_parties) if a != b
        }
        self.links = [MemoryLink(self, i) for i in range(n_parties)]

    def deliver(self, src: int, dst: int, payload: bytes | None) -> None:
        self._queues[(src, dst)].put(payload)

    def take(self, src: int, dst: int) -> bytes:
        try:
            item = self._queues[(src, dst)].get(timeout=self.timeout_s)
        except queue.Empty:
            raise PeerError(src, "timed out") from None
        if item is None:
            raise PeerError(src, "closed the link")
        return item


class MemoryLink:
    """One party's end of a `MemoryNetwork`; implements `PeerLink`."""

    def __init__(self, network: MemoryNetwork, party_id: int) -> None:
        self.network = network
        self.party_id = party_id
        self.n_parties = network.n_parties
        self.stats = LinkStats()
        self._closed = False

    def _check_peer(self, peer: int) -> None:
        if peer == self.party_id or not 0 <= peer < self.n_parties:
            raise PeerError(peer, "no such peer")

    def send(self, peer: int, payload: bytes) -> None:
        self._check_peer(peer)
        if self._closed:
            raise PeerError(peer, "link is closed")
        self.stats.bytes_sent += len(payload)
        self.stats.messages_sent += 1
        self.network.deliver(self.party_id, peer, bytes(payload))

    def recv(self, peer: int) -> bytes:
        self._check_peer(peer)
        payload = self.network.take(peer, self.party_id)
        self.stats.bytes_received += len(payload)
        self.stats.messages_received += 1
        return payload

    def round(self, outgoing: dict[int, bytes], expect_from: list[int]) -> dict[int, bytes]:
        for peer, payload in outgoing.items():
            self.send(peer, payload)
        received = {peer: self.recv(peer) for peer in expect_from}
        self.stats.rounds += 1
        return received

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for peer in range(self.n_parties):
                if peer != self.party_id:
                    self.network.deliver(self.party_id, peer, None)


def run_threads(fns: list[Callable[[], Any]], timeout_s: float = 120.0) -> list[Any]:
    """Run one callable per party in its own thread; return their results in order, or re-raise
    the first exception (by party order) once all threads finished."""
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException | None] = [None] * len(fns)

    def runner(i: int) -> None:
        try:
            results[i] = fns[i]()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            errors[i] = exc

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
        if t.is_alive():
            raise PeerError(-1, "party thread did not finish in time")
    for err in errors:
        if err is not None:
            raise err
    return results
