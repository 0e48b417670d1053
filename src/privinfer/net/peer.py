"""The link between MPC parties (or HE client and server) that protocols see.

Protocol code talks to its peers only through `PeerLink`; the TLS transport, an in-process
test transport and metering wrappers all implement it. Payloads are opaque bytes; framing,
authentication, session binding and byte/round counting happen below this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from privinfer.errors import PrivinferError


@dataclass
class LinkStats:
    """Traffic counted at the link: bytes and messages each way, and communication rounds."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    rounds: int = 0
    by_label: dict[str, dict[str, int]] = field(default_factory=dict)


class PeerLink(Protocol):
    """A party's connections to its peers, identified by integer party ids."""

    party_id: int
    n_parties: int
    stats: LinkStats

    def send(self, peer: int, payload: bytes) -> None:
        """Queue `payload` for `peer`; frames of one round may be flushed together."""
        ...

    def recv(self, peer: int) -> bytes:
        """Next payload from `peer`, in order; raises PeerError on timeout, drop or bad frame."""
        ...

    def round(self, outgoing: dict[int, bytes], expect_from: list[int]) -> dict[int, bytes]:
        """One communication round: send all of `outgoing`, then receive one payload from each
        peer in `expect_from`. Counts exactly one round in `stats`."""
        ...

    def close(self) -> None: ...


class PeerError(PrivinferError):
    """A peer died, timed out, sent a frame that failed validation, or ended the session; names
    the peer (its party id) and why, never data. The message is "party {peer}: {reason}" unless
    the raiser words it itself (`message`); either way one sentence safe to print."""

    def __init__(self, peer: int, reason: str, message: str | None = None) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(f"party {peer}: {reason}" if message is None else message)
