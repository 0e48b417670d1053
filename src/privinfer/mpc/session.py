"""One MPC session over a 4-endpoint TLS mesh (parties 0-2, client 3): the parties' 3-party view,
the party-side client port and the session's PRF keys (semi-honest honest majority; the TLS
session keys are fresh per session and each pairwise key is known to its two endpoints only).

Client <-> party messages, in order: REQUEST (JSON) -> REPLY (JSON); per forward pass the
client's one-hot shares, then (when sampling, after the first pass only) its temperature
shares (16 bytes per party; the parties generate the Gumbel noise); the party's token share
(one byte of fractional bits + its re-randomised component + the party's cumulative rounds and
party-to-party bytes sent so far, two big-endian u64: public counts that depend only on shapes,
so the client can show them as they accrue); after each token the client's
CONTINUE byte (1 go on, 0 stop); at the end the party's STATS (JSON, counters only). Token ids,
prompts and the temperature never reach a party.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privinfer.errors import PrivinferError
from privinfer.models.ops import Sampler
from privinfer.mpc.runtime import N_PARTIES
from privinfer.net.peer import LinkStats, PeerError

CLIENT_ID = N_PARTIES  # the client is endpoint 3 of the cluster
PROTOCOL = "privinfer-mpc-session/v2"  # v2: the output message carries the counters
CONTINUE, STOP = b"\x01", b"\x00"
COUNTERS = struct.Struct(">QQ")  # trailer of every output message: rounds, bytes sent so far
ABORT = b"\xffABORT"  # party -> client: a peer party failed; JSON {"peer", "reason"} follows


class MpcSessionError(PrivinferError):
    """An MPC session failed: a party refused the request, died, or broke the protocol."""


def prf_key(link: Any, peer: int, session_id: bytes) -> bytes:
    """AES-128 PRF key shared with `peer`: HKDF-SHA256 of the TLS link's fresh pairwise key."""
    lo, hi = sorted((link.party_id, peer))
    info = f"privinfer/mpc/prf/v1/{lo}-{hi}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=session_id, info=info).derive(
        link.pairwise_key(peer)
    )


class PartyView:
    """The 3-party `PeerLink` that protocols see, on top of the 4-endpoint TLS link; counts only
    party-to-party traffic (the client channel is metered by `RemotePort`)."""

    def __init__(self, link: Any) -> None:
        self.inner = link
        self.party_id: int = link.party_id
        self.n_parties = N_PARTIES
        self.stats = LinkStats()

    def send(self, peer: int, payload: bytes) -> None:
        before = self.inner.stats.bytes_sent
        self.inner.send(peer, payload, "mpc")
        self.stats.bytes_sent += self.inner.stats.bytes_sent - before

    def recv(self, peer: int) -> bytes:
        before = self.inner.stats.bytes_received
        got = self.inner.recv(peer)
        self.stats.bytes_received += self.inner.stats.bytes_received - before
        return got

    def round(self, outgoing: dict[int, bytes], expect_from: list[int]) -> dict[int, bytes]:
        s, before = self.inner.stats, (self.inner.stats.bytes_sent, self.inner.stats.bytes_received)
        got = self.inner.round(outgoing, expect_from, "mpc")
        self.stats.bytes_sent += s.bytes_sent - before[0]
        self.stats.bytes_received += s.bytes_received - before[1]
        self.stats.rounds += 1
        return got

    def close(self) -> None:
        self.inner.close()


class RemotePort:
    """Party side of the client channel: a `ClientPort` that reads the client's shares from the
    link and sends reveal payloads to the client only (it returns None: the party learns
    nothing). Each output carries `view`'s cumulative counters (`COUNTERS`) when given."""

    def __init__(self, link: Any, view: PartyView | None = None) -> None:
        self.link = link
        self.view = view
        self.bytes_to_client = 0
        self.bytes_from_client = 0

    def recv(self, expect_bytes: int | None = None) -> bytes:
        got = self.link.recv(CLIENT_ID)
        self.bytes_from_client += len(got)
        if expect_bytes is not None and len(got) != expect_bytes:
            raise PeerError(CLIENT_ID, "client payload has the wrong length")
        return got

    def send(self, payload: bytes) -> None:
        self.bytes_to_client += len(payload)
        self.link.send(CLIENT_ID, payload, "client")

    def recv_json(self) -> dict[str, Any]:
        try:
            msg = json.loads(self.recv().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise PeerError(CLIENT_ID, "client sent a malformed control message") from None
        if not isinstance(msg, dict):
            raise PeerError(CLIENT_ID, "client sent a malformed control message")
        return msg

    def send_json(self, msg: dict[str, Any]) -> None:
        self.send(json.dumps(msg).encode())

    def token_input(self, party_id: int, ids: Sequence[int], vocab: int) -> bytes:
        return self.recv(2 * 8 * len(ids) * vocab)

    def sampling_temperature(self, party_id: int, frac_bits: int, sampler: Sampler) -> bytes:
        return self.recv(2 * 8)

    def output(
        self, party_id: int, payload: bytes, shape: tuple[int, ...], frac_bits: int
    ) -> torch.Tensor | None:
        v = self.view.stats if self.view is not None else LinkStats()
        self.send(bytes([frac_bits]) + payload + COUNTERS.pack(v.rounds, v.bytes_sent))
        return None

    def abort(self, exc: PeerError) -> None:
        """Tell the client which peer failed, best effort, before the session ends."""
        try:
            self.send(ABORT + json.dumps({"peer": exc.peer, "reason": exc.reason}).encode())
        except PeerError:
            pass

    def wait_continue(self) -> bool:
        got = self.recv(1)
        if got not in (CONTINUE, STOP):
            raise PeerError(CLIENT_ID, "client sent a malformed continue byte")
        return got == CONTINUE
