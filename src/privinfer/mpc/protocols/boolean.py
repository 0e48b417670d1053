"""Boolean (XOR, 64 bits packed per int64 word) replicated shares: AND, arithmetic-to-boolean
conversion with a log-depth parallel-prefix adder, and bit injection back to Z_2^64
(semi-honest, honest majority; every message is masked by a fresh PRF zero-sharing or key).

a2b: party 0 XOR-shares a = x_0 + x_1 (1 round); b = x_2 is held by parties 1 and 2 and needs
no communication. A Kogge-Stone adder adds them: generate/propagate (1 AND round), 6 prefix
levels (1 round each, two ANDs batched) -> 8 rounds, 8 bytes per AND word per party.
bits_to_arith: d = c_0 ^ c_1 is known to party 0, c_2 to parties 1 and 2;
bit = d + c_2 - 2 d c_2: party 0 sends d masked to party 1 (1 round), then parties 1 and 2 swap
masked halves (1 round): 8 bytes per bit from each party (was 16 from party 0).
"""

from __future__ import annotations

import torch

from privinfer.mpc.runtime import N_PARTIES, Party
from privinfer.mpc.shares import BShare, RShare


def and_many(party: Party, pairs: list[tuple[BShare, BShare]]) -> list[BShare]:
    """Bitwise AND of several pairs of boolean shares in one round."""
    zs = [(x.a & y.a) ^ (x.a & y.b) ^ (x.b & y.a) for x, y in pairs]
    flat = torch.cat([z.reshape(-1) for z in zs])
    flat = flat ^ party.rand.zero_share_xor(flat.shape)
    got = party.send_prev_recv_next(flat)
    out, start = [], 0
    for z in zs:
        n = z.numel()
        out.append(
            BShare(
                flat[start : start + n].reshape(z.shape),
                got[start : start + n].reshape(z.shape),
                party.pid,
            )
        )
        start += n
    return out


def and_(party: Party, x: BShare, y: BShare) -> BShare:
    """Bitwise AND (one round)."""
    return and_many(party, [(x, y)])[0]


def or_(party: Party, x: BShare, y: BShare) -> BShare:
    """Bitwise OR (one round): x ^ y ^ (x & y)."""
    return x ^ y ^ and_(party, x, y)


def _share_bits_from_party0(party: Party, word: torch.Tensor | None, shape: torch.Size) -> BShare:
    """XOR-share a word known to party 0 (one round; party 0 -> party 2)."""
    i = party.pid
    if i == 0:
        c1 = party.rand.next.draw(shape)
        c0 = word ^ c1  # type: ignore[operator]
        party.exchange({2: c0}, {})
        return BShare(c0, c1, i)
    if i == 1:
        c1 = party.rand.prev.draw(shape)
        party.exchange({}, {})
        return BShare(c1, torch.zeros(shape, dtype=torch.int64), i)
    c0 = party.exchange({}, {0: shape})[0]
    return BShare(torch.zeros(shape, dtype=torch.int64), c0, i)


def a2b(party: Party, x: RShare) -> BShare:
    """Boolean shares of the 64 bits of the ring value of `x` (8 rounds)."""
    i = party.pid
    shape = x.shape
    with party.op("a2b"):
        word = x.a + x.b if i == 0 else None
        a = _share_bits_from_party0(party, word, shape)
        zero = torch.zeros(shape, dtype=torch.int64)
        if i == 0:
            b = BShare(zero, zero.clone(), i)
        elif i == 1:
            b = BShare(zero, x.b.clone(), i)  # component 2
        else:
            b = BShare(x.a.clone(), zero, i)  # component 2
        p = a ^ b
        (g,) = and_many(party, [(a, b)])
        big_g, big_p = g, p
        k = 1
        while k < 64:
            if k < 32:
                big_g_new, big_p = and_many(
                    party, [(big_p, big_g.lshift(k)), (big_p, big_p.lshift(k))]
                )
            else:
                (big_g_new,) = and_many(party, [(big_p, big_g.lshift(k))])
            big_g = big_g ^ big_g_new  # generate and propagate-generate are disjoint
            k *= 2
        return p ^ big_g.lshift(1)


def bits_to_arith(party: Party, bits: BShare, positions: list[int]) -> RShare:
    """Arithmetic (f=0) shares of the selected bit positions, stacked on a new last dim
    (2 rounds, whatever the number of positions; 8 bytes per bit from each party).

    bit = d + c - 2 d c with d = x_0 ^ x_1 (party 0) and c = x_2 (parties 1 and 2). Round 1:
    party 0 sends d + r to party 1 (r from the key of parties 0 and 2), so parties 1 and 2 hold
    an additive split u_1 + u_2 of the bit. Round 2: components x_0, x_1 are drawn from party
    0's two keys; parties 1 and 2 swap u_1 - x_1 and u_2 - x_0, whose sum is x_2.
    """
    i = party.pid
    pos = torch.tensor(positions, dtype=torch.int64)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return (t.unsqueeze(-1) >> pos) & 1

    shape = tuple(bits.a.shape) + (len(positions),)
    with party.op("b2a"):
        if i == 0:
            masked = pick(bits.a ^ bits.b) + party.rand.prev.draw(shape)
            party.exchange({1: masked}, {})
            x0, x1 = party.rand.prev.draw(shape), party.rand.next.draw(shape)
            party.exchange({}, {})
            return RShare(x0, x1, i, 0)
        if i == 1:
            c = pick(bits.b)
            e = party.exchange({}, {0: shape})[0]
            x1 = party.rand.prev.draw(shape)
            part = e + c - 2 * e * c - x1  # u_1 - x_1
            got = party.exchange({2: part}, {2: shape})[2]
            return RShare(x1, part + got, i, 0)
        c = pick(bits.a)
        r = party.rand.next.draw(shape)
        party.exchange({}, {})
        x0 = party.rand.next.draw(shape)
        part = 2 * r * c - r - x0  # u_2 - x_0
        got = party.exchange({1: part}, {1: shape})[1]
        return RShare(part + got, x0, i, 0)


def suffix_or(party: Party, bits: BShare) -> BShare:
    """Bit j of the result is the OR of bits j..63 (6 rounds)."""
    s = bits
    k = 1
    while k < 64:
        s = or_(party, s, s.rshift(k))
        k *= 2
    return s


__all__ = ["N_PARTIES", "a2b", "and_", "and_many", "bits_to_arith", "or_", "suffix_or"]
