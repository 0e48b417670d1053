"""A link wrapper that records what one party receives (its view), for the view tests."""

from __future__ import annotations


class RecordingLink:
    """Wraps a PeerLink and keeps every payload this party receives (its view)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.party_id = inner.party_id
        self.n_parties = inner.n_parties
        self.stats = inner.stats
        self.view: list[bytes] = []

    def send(self, peer: int, payload: bytes) -> None:
        self.inner.send(peer, payload)

    def recv(self, peer: int) -> bytes:
        got = self.inner.recv(peer)
        self.view.append(got)
        return got

    def round(self, outgoing, expect_from):  # type: ignore[no-untyped-def]
        got = self.inner.round(outgoing, expect_from)
        self.view.extend(got[p] for p in sorted(got))
        return got

    def close(self) -> None:
        self.inner.close()
