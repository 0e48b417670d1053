"""A two-party session: one party's link to its peer, fixed-point precision, OT pools and cost
meter (semi-honest 2PC between client and model owner; no third party, no dealer).

Protocol code talks to the peer only through `TwoParty.exchange` (both parties send one message,
then each receives the other's: one round, counted once at each party; a one-way flight is an
exchange in which one side sends an empty message). Costs are recorded per op class by
`TwoParty.op(label)` (outermost scope only). Input-independent work (OT extension, AND and
Beaver triples) runs inside `TwoParty.offline_phase()`; its rounds and bytes are recorded under
"<op>/offline" (rounds, bytes, wall seconds) and left out of the op's online figures. In this build the offline phase runs on
demand, interleaved with the online one, unless `TwoParty.prepare` is called ahead.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privinfer.models.costs import CostReport
from privinfer.net.memory import MemoryNetwork, run_threads
from privinfer.net.peer import PeerError, PeerLink
from privinfer.twopc.aes import prg
from privinfer.twopc.ring import DEFAULT_FRAC_BITS

N_PARTIES = 2


class TwoParty:
    """Party `pid` (0 = model owner, 1 = client by convention) of a two-party session."""

    def __init__(self, link: PeerLink, frac_bits: int = DEFAULT_FRAC_BITS) -> None:
        if link.n_parties != N_PARTIES:
            raise ValueError("the two-party engine needs exactly two parties")
        if not 8 <= frac_bits <= 24:
            raise ValueError("frac_bits must lie in [8, 24]")
        self.link = link
        self.pid = link.party_id
        self.peer = 1 - self.pid
        self.f = frac_bits
        self.meter = CostReport()
        self.offline_rounds = 0
        self.offline_bytes_sent = 0
        self.offline_bytes_received = 0
        self.offline_wall_s = 0.0
        self._depth = 0
        self._offline_depth = 0
        self._shared_key: bytes | None = None
        self._shared_ctr = 0
        from privinfer.twopc.ot import OTPools  # local: ot builds on this module

        self.ot = OTPools(self)

    # ------------------------------------------------------------------ communication
    def exchange(self, payload: bytes | np.ndarray) -> bytes:
        """Send `payload` to the peer and receive its message of this round (one round)."""
        data = payload.tobytes() if isinstance(payload, np.ndarray) else bytes(payload)
        return self.link.round({self.peer: data}, [self.peer])[self.peer]

    def send_only(self, payload: bytes | np.ndarray) -> None:
        """A one-way flight to the peer (one round); the peer must send nothing in it."""
        if self.exchange(payload):
            raise PeerError(self.peer, "payload has the wrong length (expected none)")

    def exchange_array(self, mine: np.ndarray, dtype: type, count: int) -> np.ndarray:
        """`exchange` for numpy arrays: receive exactly `count` items of `dtype` from the peer."""
        got = self.exchange(np.ascontiguousarray(mine))
        if len(got) != count * np.dtype(dtype).itemsize:
            raise PeerError(self.peer, "payload has the wrong length")
        return np.frombuffer(got, dtype=dtype).copy()

    # ------------------------------------------------------------------ randomness
    def setup(self) -> None:
        """Agree the shared PRG key (X25519 + HKDF) and run the base OTs of both IKNP
        directions (3 rounds, 4,160 bytes each way)."""
        with self.op("setup"), self.offline_phase():
            key = X25519PrivateKey.generate()
            mine = key.public_key().public_bytes_raw()
            theirs = self.exchange(mine)
            if len(theirs) != 32:
                raise PeerError(self.peer, "setup: malformed key share")
            try:
                shared = key.exchange(X25519PublicKey.from_public_bytes(theirs))
            except ValueError:
                raise PeerError(self.peer, "setup: bad X25519 key share") from None
            pubs = (mine, theirs) if self.pid == 0 else (theirs, mine)
            self._shared_key = HKDF(
                algorithm=hashes.SHA256(), length=16, salt=None, info=b"privinfer/twopc/prg/v1"
            ).derive(shared + pubs[0] + pubs[1])
            self.ot.setup()

    def shared_random_u64(self, n: int) -> np.ndarray:
        """n uint64 words both parties draw identically (AES-CTR under the session's shared key;
        for masks of a party's own input: the peer knowing the mask is what sharing means)."""
        if self._shared_key is None:
            raise RuntimeError("call setup() first")
        out = prg(self._shared_key, self._shared_ctr, 8 * n).view(np.uint64).copy()
        self._shared_ctr += (8 * n + 15) // 16
        return out

    @staticmethod
    def private_random_u64(n: int) -> np.ndarray:
        """n uint64 words from this party's own CSPRNG (AES-CTR under a fresh OS-random key)."""
        return prg(secrets.token_bytes(16), 0, 8 * n).view(np.uint64).copy()

    @staticmethod
    def private_random_bits(n: int) -> np.ndarray:
        """n private random bits (uint8 0/1)."""
        return (prg(secrets.token_bytes(16), 0, n) & 1).astype(np.uint8)

    def prepare(self, sender0: int, sender1: int) -> None:
        """Run the OT extension ahead for `sender0` random OTs with party 0 as sender and
        `sender1` with party 1 as sender (the offline phase, recorded under 'prepare')."""
        with self.op("prepare"):
            self.ot.reserve(sender0, sender1)

    # ------------------------------------------------------------------ costs
    def op(self, label: str) -> _OpScope:
        """Attribute the enclosed rounds and bytes to `label` (outermost scope records)."""
        return _OpScope(self, label)

    def offline_phase(self) -> _OfflineScope:
        """Mark the enclosed communication as input-independent (offline) work."""
        return _OfflineScope(self)


class _OfflineScope:
    __slots__ = ("party", "start")

    def __init__(self, party: TwoParty) -> None:
        self.party = party

    def __enter__(self) -> None:
        p = self.party
        p._offline_depth += 1
        if p._offline_depth == 1:
            s = p.link.stats
            self.start = (s.rounds, s.bytes_sent, s.bytes_received, time.perf_counter())

    def __exit__(self, *exc: object) -> None:
        p = self.party
        p._offline_depth -= 1
        if p._offline_depth == 0:
            p.offline_rounds += p.link.stats.rounds - self.start[0]
            p.offline_bytes_sent += p.link.stats.bytes_sent - self.start[1]
            p.offline_bytes_received += p.link.stats.bytes_received - self.start[2]
            p.offline_wall_s += time.perf_counter() - self.start[3]


class _OpScope:
    __slots__ = ("party", "label", "start")

    def __init__(self, party: TwoParty, label: str) -> None:
        self.party, self.label = party, label

    def __enter__(self) -> None:
        p = self.party
        p._depth += 1
        if p._depth == 1:
            s = p.link.stats
            self.start = (
                s.rounds,
                s.bytes_sent,
                s.bytes_received,
                p.offline_rounds,
                p.offline_bytes_sent,
                p.offline_bytes_received,
                p.offline_wall_s,
                time.perf_counter(),
            )

    def __exit__(self, *exc: object) -> None:
        p = self.party
        p._depth -= 1
        if p._depth:
            return
        s, st = p.link.stats, self.start
        off_r = p.offline_rounds - st[3]
        off_b = p.offline_bytes_sent - st[4]
        off_in = p.offline_bytes_received - st[5]
        off_s = p.offline_wall_s - st[6]
        p.meter.record(
            self.label,
            rounds=s.rounds - st[0] - off_r,
            bytes_sent=s.bytes_sent - st[1] - off_b,
            bytes_received=s.bytes_received - st[2] - off_in,
            wall_s=time.perf_counter() - st[7] - off_s,
        )
        if off_r or off_b or off_in:
            p.meter.record(
                f"{self.label}/offline",
                rounds=off_r,
                bytes_sent=off_b,
                bytes_received=off_in,
                wall_s=off_s,
            )


def run_local(
    program: Callable[[TwoParty], Any],
    frac_bits: int = DEFAULT_FRAC_BITS,
    timeout_s: float = 60.0,
    links: list[PeerLink] | None = None,
) -> list[Any]:
    """Run `program(party)` for two in-process parties over a MemoryNetwork (after `setup`);
    returns both results. A failing party closes its link so the other stops with PeerError."""
    if links is None:
        links = list(MemoryNetwork(N_PARTIES, timeout_s=timeout_s).links)

    def make(i: int) -> Callable[[], Any]:
        def body() -> Any:
            party = TwoParty(links[i], frac_bits)
            try:
                party.setup()
                return program(party)
            except BaseException:
                links[i].close()
                raise

        return body

    return run_threads([make(i) for i in range(N_PARTIES)], timeout_s=timeout_s * 4)


def connect_tls(
    cluster_path: str, party_id: int, frac_bits: int = DEFAULT_FRAC_BITS, timeout_s: float = 30.0
) -> TwoParty:
    """This process's party of a two-party cluster (net.cluster, `init_cluster` with two hosts):
    mutually authenticated TLS 1.3 to the peer, then `setup`. Close with `party.link.close()`."""
    from privinfer.net.cluster import load_cluster
    from privinfer.net.tls import connect_parties

    cluster = load_cluster(cluster_path)
    if cluster.n_parties != N_PARTIES:
        raise ValueError("a two-party session needs a cluster of exactly two parties")
    link = connect_parties(cluster, party_id, timeout_s=timeout_s)
    party = TwoParty(link, frac_bits)
    try:
        party.setup()
    except BaseException:
        link.close()
        raise
    return party
