"""Replicated secret shares over Z_2^64 (arithmetic) and over bit-packed words (boolean), with
sharing and reveal; hides the secret from any single semi-honest party of three.

Components: x = x_0 + x_1 + x_2 (or x_0 ^ x_1 ^ x_2); party i holds (x_i, x_{i+1 mod 3}) as
(`a`, `b`). Linear operations are local. `f` is the number of fractional bits of the encoding
(0 for integers and bits).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import torch

from privinfer.mpc.ring import bits_to_bytes, bytes_to_ring, decode, encode
from privinfer.mpc.runtime import N_PARTIES, Party


@dataclass
class RShare:
    """A party's replicated arithmetic share of a tensor with `f` fractional bits."""

    a: torch.Tensor
    b: torch.Tensor
    pid: int
    f: int

    def __repr__(self) -> str:  # never print share values
        return f"RShare(shape={tuple(self.a.shape)}, f={self.f}, party={self.pid})"

    @property
    def shape(self) -> torch.Size:
        return self.a.shape

    def _like(self, a: torch.Tensor, b: torch.Tensor, f: int | None = None) -> RShare:
        return RShare(a, b, self.pid, self.f if f is None else f)

    def __add__(self, other: RShare) -> RShare:
        return self._like(self.a + other.a, self.b + other.b)

    def __sub__(self, other: RShare) -> RShare:
        return self._like(self.a - other.a, self.b - other.b)

    def __neg__(self) -> RShare:
        return self._like(-self.a, -self.b)

    def add_ring(self, c: torch.Tensor | int) -> RShare:
        """Add a public ring tensor (already encoded at this share's scale) to component 0."""
        c = torch.as_tensor(c, dtype=torch.int64)
        a = self.a + c if self.pid == 0 else self.a + torch.zeros_like(c)
        b = self.b + c if self.pid == 2 else self.b + torch.zeros_like(c)
        return self._like(a, b)

    def add_public(self, c: torch.Tensor | float) -> RShare:
        """Add a public real value or tensor."""
        return self.add_ring(encode(c, self.f))

    def mul_ring(self, c: torch.Tensor | int) -> RShare:
        """Multiply by a public integer tensor (no truncation, scale unchanged)."""
        return self._like(self.a * c, self.b * c)

    def map(self, fn) -> RShare:  # type: ignore[no-untyped-def]
        """Apply the same linear, shape-only function (view, index, sum, ...) to both parts."""
        return self._like(fn(self.a), fn(self.b))

    def with_f(self, f: int) -> RShare:
        """Reinterpret the same ring value with `f` fractional bits (value scaled by 2^(old-f))."""
        return self._like(self.a, self.b, f)

    @staticmethod
    def cat(parts: list[RShare], dim: int = 0) -> RShare:
        return RShare(
            torch.cat([p.a for p in parts], dim),
            torch.cat([p.b for p in parts], dim),
            parts[0].pid,
            parts[0].f,
        )

    @staticmethod
    def stack(parts: list[RShare], dim: int = 0) -> RShare:
        return RShare(
            torch.stack([p.a for p in parts], dim),
            torch.stack([p.b for p in parts], dim),
            parts[0].pid,
            parts[0].f,
        )


@dataclass
class BShare:
    """A party's replicated XOR share of bit-packed int64 words (64 bits per word)."""

    a: torch.Tensor
    b: torch.Tensor
    pid: int

    def __repr__(self) -> str:
        return f"BShare(shape={tuple(self.a.shape)}, party={self.pid})"

    def __xor__(self, other: BShare) -> BShare:
        return BShare(self.a ^ other.a, self.b ^ other.b, self.pid)

    def xor_public(self, c: torch.Tensor | int) -> BShare:
        c = torch.as_tensor(c, dtype=torch.int64)
        a = self.a ^ c if self.pid == 0 else self.a.clone()
        b = self.b ^ c if self.pid == 2 else self.b.clone()
        return BShare(a, b, self.pid)

    def and_public(self, c: torch.Tensor | int) -> BShare:
        return BShare(self.a & c, self.b & c, self.pid)

    def lshift(self, k: int) -> BShare:
        return BShare(self.a << k, self.b << k, self.pid)

    def rshift(self, k: int) -> BShare:
        """Logical right shift of every word."""
        mask = (1 << (64 - k)) - 1 if k else -1
        return BShare((self.a >> k) & mask, (self.b >> k) & mask, self.pid)


def zeros_share(party: Party, shape: tuple[int, ...], f: int | None = None) -> RShare:
    """Shares of the public value zero."""
    z = torch.zeros(shape, dtype=torch.int64)
    return RShare(z, z.clone(), party.pid, party.f if f is None else f)


def public_share(party: Party, value: torch.Tensor | float, f: int | None = None) -> RShare:
    """Trivial shares of a public value (component 0 holds it)."""
    f = party.f if f is None else f
    enc = encode(value, f)
    return zeros_share(party, tuple(enc.shape), f).add_ring(enc)


def share_from(
    party: Party,
    owner: int,
    value: torch.Tensor | None,
    shape: tuple[int, ...],
    f: int | None = None,
    encoded: bool = False,
) -> RShare:
    """Share `value` (real, or ring if `encoded`) held by party `owner`; one round in which the
    owner sends one masked component to party owner-1. Others pass value=None."""
    f = party.f if f is None else f
    i, o = party.pid, owner
    with party.op("share"):
        if i == o:
            ring = value if encoded else encode(value, f)  # type: ignore[arg-type]
            ring = torch.as_tensor(ring, dtype=torch.int64).reshape(shape)
            c_next = party.rand.next.draw(shape)
            c_own = ring - c_next
            party.exchange({(o - 1) % N_PARTIES: c_own}, {})
            return RShare(c_own, c_next, i, f)
        if i == (o + 1) % N_PARTIES:
            c = party.rand.prev.draw(shape)
            party.exchange({}, {})
            return RShare(c, torch.zeros(shape, dtype=torch.int64), i, f)
        got = party.exchange({}, {o: shape})[o]
        return RShare(torch.zeros(shape, dtype=torch.int64), got, i, f)


def client_make_shares(x: torch.Tensor | np.ndarray, f: int) -> list[bytes]:
    """An outside client's three payloads for sharing `x` (party i gets (x_i, x_{i+1}))."""
    ring = encode(x, f)
    n = ring.numel()
    r0 = torch.from_numpy(np.frombuffer(secrets.token_bytes(8 * n), np.int64).copy())
    r1 = torch.from_numpy(np.frombuffer(secrets.token_bytes(8 * n), np.int64).copy())
    r0, r1 = r0.reshape(ring.shape), r1.reshape(ring.shape)
    comps = (r0, r1, ring - r0 - r1)
    return [
        bits_to_bytes(torch.stack((comps[i], comps[(i + 1) % N_PARTIES]))) for i in range(N_PARTIES)
    ]


def accept_client_share(party: Party, payload: bytes, shape: tuple[int, ...]) -> RShare:
    """Turn the client's payload for this party into its share (no round among the parties)."""
    pair = bytes_to_ring(payload, (2, *shape))
    return RShare(pair[0].clone(), pair[1].clone(), party.pid, party.f)


def reveal_to_client_payload(x: RShare) -> bytes:
    """What this party sends the client so it can reconstruct `x`: its first component."""
    return bits_to_bytes(x.a)


def client_reconstruct(payloads: list[bytes], shape: tuple[int, ...], f: int) -> torch.Tensor:
    """Client side: sum the three parties' components and decode."""
    total = sum(bytes_to_ring(p, shape) for p in payloads)
    return decode(total, f)  # type: ignore[arg-type]


def reveal_ring_to(party: Party, x: RShare, target: int) -> torch.Tensor | None:
    """Reveal the ring value of `x` to party `target` only (party target+1 sends x_{target+2});
    others get None. One round."""
    i = party.pid
    with party.op("reveal"):
        if i == (target + 1) % N_PARTIES:
            party.exchange({target: x.b}, {})
            return None
        if i == target:
            sender = (target + 1) % N_PARTIES
            got = party.exchange({}, {sender: x.shape})[sender]
            return x.a + x.b + got
        party.exchange({}, {})
        return None


def reveal_to(party: Party, x: RShare, target: int) -> torch.Tensor | None:
    """Reveal the decoded real value of `x` to `target` (None at the other parties)."""
    ring = reveal_ring_to(party, x, target)
    return None if ring is None else decode(ring, x.f)


def reveal_ring(party: Party, x: RShare) -> torch.Tensor:
    """Open the ring value of `x` to all three parties (one round)."""
    with party.op("reveal"):
        got = party.send_prev_recv_next(x.b)
    return x.a + x.b + got


def reveal(party: Party, x: RShare) -> torch.Tensor:
    """Open the decoded real value of `x` to all parties."""
    return decode(reveal_ring(party, x), x.f)


def reveal_bits(party: Party, x: BShare) -> torch.Tensor:
    """Open boolean shares to all parties (one round)."""
    with party.op("reveal"):
        got = party.send_prev_recv_next(x.b)
    return x.a ^ x.b ^ got
