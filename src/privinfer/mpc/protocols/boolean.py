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

import numpy as np
import torch

from privinfer.mpc.runtime import N_PARTIES, Party
from privinfer.mpc.shares import BShare, RShare


def and_many(party: Party, pairs: list[tuple[BShare, BShare]]) -> list[BShare]:
    """Bitwise AND of several pairs of boolean shares in one round."""
    # x_i y_i ^ x_i y_{i+1} ^ x_{i+1} y_i = x_i (y_i ^ y_{i+1}) ^ x_{i+1} y_i
    if len(pairs) == 1:
        x, y = pairs[0]
        z = (x.a & (y.a ^ y.b)) ^ (x.b & y.a)
        z = z ^ party.rand.zero_share_xor(z.shape)
        return [BShare(z, party.send_prev_recv_next(z), party.pid)]
    zs = [(x.a & (y.a ^ y.b)) ^ (x.b & y.a) for x, y in pairs]
    flat = torch.cat([z.reshape(-1) for z in zs])
    flat = flat ^ party.rand.zero_share_xor(flat.shape)
    got = party.send_prev_recv_next(flat)
    out, start = [], 0
    for z in zs:
        n = z.numel()
        out.append(
            BShare(
                flat[start : start + n].view(z.shape),
                got[start : start + n].view(z.shape),
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


def _u64(t: torch.Tensor) -> np.ndarray:
    """The words of an int64 tensor as a uint64 numpy view (no copy; logical shifts)."""
    return t.numpy().view(np.uint64)


def _t64(a: np.ndarray) -> torch.Tensor:
    """uint64 words back to an int64 tensor (no copy)."""
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int64))


def _and_round(
    party: Party, xa: np.ndarray, xb: np.ndarray, ya: np.ndarray, yb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`and_many` for one pair of XOR shares held as uint64 arrays (same words, masks and message
    as the torch version; numpy is several times cheaper per operation on the small arrays of a
    decode step). Returns this party's two components of x & y."""
    z = (xa & (ya ^ yb)) ^ (xb & ya)
    n = z.size
    mask = party.rand.next.draw_words(n) ^ party.rand.prev.draw_words(n)
    z = z ^ mask.reshape(z.shape)
    got = party.send_prev_recv_next(_t64(z))
    return z, _u64(got)


def a2b(party: Party, x: RShare) -> BShare:
    """Boolean shares of the 64 bits of the ring value of `x` (8 rounds).

    The Kogge-Stone adder runs on uint64 numpy views of the words (bitwise operations and logical
    shifts are the same bits as on int64 tensors); each prefix level is one round with the two
    ANDs of a level stacked into one message."""
    i = party.pid
    shape = x.shape
    with party.op("a2b"):
        word = x.a + x.b if i == 0 else None
        a = _share_bits_from_party0(party, word, shape)
        aa, ab = _u64(a.a), _u64(a.b)
        zero = np.zeros(tuple(shape), dtype=np.uint64)
        if i == 0:
            ba, bb = zero, zero
        elif i == 1:
            ba, bb = zero, _u64(x.b)  # component 2
        else:
            ba, bb = _u64(x.a), zero  # component 2
        pa, pb = aa ^ ba, ab ^ bb
        ga, gb = _and_round(party, aa, ab, ba, bb)
        out_a, out_b = pa, pb  # p ^ (G << 1) at the end
        k = 1
        while k < 64:
            sk = np.uint64(k)
            if k < 32:  # (P & (G << k), P & (P << k)) in one round
                z, got = _and_round(
                    party, pa, pb, np.stack((ga, pa)) << sk, np.stack((gb, pb)) << sk
                )
                ga, gb = ga ^ z[0], gb ^ got[0]  # generate and propagate-generate are disjoint
                pa, pb = z[1], got[1]
            else:
                z, got = _and_round(party, pa, pb, ga << sk, gb << sk)
                ga, gb = ga ^ z, gb ^ got
            k *= 2
        one = np.uint64(1)
        return BShare(_t64(out_a ^ (ga << one)), _t64(out_b ^ (gb << one)), i)


def bits_to_arith(party: Party, bits: BShare, positions: list[int]) -> RShare:
    """Arithmetic (f=0) shares of the selected bit positions, stacked on a new last dim
    (2 rounds, whatever the number of positions; 8 bytes per bit from each party).

    bit = d + c - 2 d c with d = x_0 ^ x_1 (party 0) and c = x_2 (parties 1 and 2). Round 1:
    party 0 sends d + r to party 1 (r from the key of parties 0 and 2), so parties 1 and 2 hold
    an additive split u_1 + u_2 of the bit. Round 2: components x_0, x_1 are drawn from party
    0's two keys; parties 1 and 2 swap u_1 - x_1 and u_2 - x_0, whose sum is x_2.
    """
    i = party.pid
    pos = _positions(tuple(positions))

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


_POSITIONS: dict[tuple[int, ...], torch.Tensor] = {}


def _positions(positions: tuple[int, ...]) -> torch.Tensor:
    """Public bit positions as a tensor, built once per tuple."""
    got = _POSITIONS.get(positions)
    if got is None:
        if len(_POSITIONS) > 256:
            _POSITIONS.clear()
        got = _POSITIONS[positions] = torch.tensor(positions, dtype=torch.int64)
    return got


def suffix_or(party: Party, bits: BShare) -> BShare:
    """Bit j of the result is the OR of bits j..63 (6 rounds)."""
    s = bits
    k = 1
    while k < 64:
        s = or_(party, s, s.rshift(k))
        k *= 2
    return s


__all__ = ["N_PARTIES", "a2b", "and_", "and_many", "bits_to_arith", "or_", "suffix_or"]
