"""Which of 2^m equal segments of [-R, R) holds x, from one bit decomposition (semi-honest,
honest majority; only masked boolean/arithmetic shares are exchanged).

For segments of width 2^w (R = 2^(w+m-1)), floor(x / 2^w) is read directly from bits
f+w .. f+w+m-1 of x's two's-complement ring value, and x is in range iff bits f+w+m-1 .. 63
all equal the sign bit. So instead of 2^m + 1 comparisons (one 64-bit adder each), one a2b
(8 rounds), one OR tree over the high bits (6 rounds), an m-level decoder (m rounds, all ANDs of a
level packed into one 64-bit word) and one bit injection (2 rounds) give exact one-hot
indicators: bytes per element ~330 instead of ~120 per comparison.
`abs_segment_onehot` does the same for |x| on [0, R) (SiLU/GeLU), bit-sliced after the a2b:
its OR tree, decoder and final AND cost ~8 bytes per element, in 7 rounds.
"""

from __future__ import annotations

import numpy as np
import torch

from privinfer.mpc.protocols.boolean import a2b, and_many, bits_to_arith, or_
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import BShare, RShare


def _bit(x: BShare, pos: int) -> BShare:
    """The bit at `pos` moved to position 0 (other bits cleared)."""
    return x.rshift(pos).and_public(1)


def _pack(bits: list[BShare]) -> BShare:
    word = bits[0]
    for i, b in enumerate(bits[1:], start=1):
        word = word ^ b.lshift(i)
    return word


def _not(b: BShare) -> BShare:
    return b.xor_public(1)


def segment_onehot(
    party: Party, x: RShare, width_log2: int, m: int
) -> tuple[list[RShare], RShare, RShare]:
    """(indicators of the 2^m segments of width 2^width_log2 covering [-R, R) in order,
    [x < -R], [x >= R]), all f=0 arithmetic 0/1 shares. 19 + m rounds."""
    f = x.f
    lo_bit = f + width_log2
    top = lo_bit + m - 1  # the segment index's sign position
    if lo_bit < 0 or top >= 62 or not 1 <= m <= 5:
        raise ValueError("segment layout does not fit the ring")
    with party.op("segments"):
        bits = a2b(party, x)
        sign_all = BShare(bits.a >> 63, bits.b >> 63, party.pid)  # sign copied to every bit
        high_mask = ((1 << 63) - 1) & ~((1 << top) - 1)  # bits top .. 62
        diff = (bits ^ sign_all).and_public(high_mask)
        k = 1
        while k < 64:  # OR-reduce every high bit down to position `top`
            diff = or_(party, diff, diff.rshift(k))
            k *= 2
        out = _bit(diff, top)  # 1 iff x is outside [-R, R)
        sign = _bit(bits, 63)
        index_bits = [_bit(bits, lo_bit + j) for j in range(m)]
        index_bits[m - 1] = _not(index_bits[m - 1])  # offset by 2^(m-1): index in [0, 2^m)
        # decoder: index = sum_j bit_j 2^j, high bit first; the tails ride in the first level
        terms = [_not(out)]
        extra_l, extra_r = [out, out], [sign, _not(sign)]
        left = right = None
        for j in reversed(range(m)):
            c = index_bits[j]
            lhs = _pack([t for t in terms for _ in (0, 1)] + extra_l)
            rhs = _pack([lit for _ in terms for lit in (_not(c), c)] + extra_r)
            (prod,) = and_many(party, [(lhs, rhs)])
            n = 2 * len(terms)
            if extra_l:
                left, right = _bit(prod, n), _bit(prod, n + 1)
                extra_l, extra_r = [], []
            terms = [_bit(prod, i) for i in range(n)]
        assert left is not None and right is not None
        word = _pack(terms + [left, right])
        ind = bits_to_arith(party, word, list(range(len(terms) + 2)))
        n = len(terms)
        inds = [ind.map(lambda t, i=i: t[..., i]) for i in range(n)]
        return inds, ind.map(lambda t: t[..., n]), ind.map(lambda t: t[..., n + 1])


def _to_planes(t: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """Bit-slice: bit p of every element, 64 elements per word -> [len(positions), words]
    (numpy unpackbits / packbits, little-endian: element 64 w + k is bit k of word w)."""
    flat = t.reshape(-1).contiguous().numpy()
    n = flat.size
    words = (n + 63) // 64
    bits = np.unpackbits(flat.view(np.uint8).reshape(n, 8), axis=1, bitorder="little")
    sel = np.zeros((len(positions), words * 64), dtype=np.uint8)
    sel[:, :n] = bits[:, positions].T
    packed = np.packbits(sel, axis=1, bitorder="little")
    return torch.from_numpy(packed.view("<i8").astype(np.int64))


def _from_planes(planes: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `_to_planes`: [planes, words] -> [n, planes] of 0/1."""
    raw = planes.contiguous().numpy().astype("<i8").view(np.uint8)
    bits = np.unpackbits(raw, axis=1, bitorder="little")
    return torch.from_numpy(bits[:, :n].T.astype(np.int64))


def _planes(x: BShare, positions: list[int]) -> BShare:
    return BShare(_to_planes(x.a, positions), _to_planes(x.b, positions), x.pid)


def _rows(x: BShare, lo: int, hi: int) -> BShare:
    return BShare(x.a[lo:hi], x.b[lo:hi], x.pid)


def _cat(parts: list[BShare]) -> BShare:
    return BShare(torch.cat([p.a for p in parts]), torch.cat([p.b for p in parts]), parts[0].pid)


def abs_segment_onehot(
    party: Party, x: RShare, width_log2: int, m: int
) -> tuple[list[RShare], RShare]:
    """(indicators of the 2^m segments of width 2^width_log2 covering [0, R) that hold |x|, all 0
    when |x| >= R; and the sign [x < 0]), f=0 arithmetic 0/1 shares. 8 + max(6, m-1) + 1 + 2
    rounds (m = 3: 17). For x < 0 the segment is read from ~x = |x| - 1 ulp (two's complement),
    i.e. from bits of x XOR its sign: a value on a boundary may land one ulp into the lower
    segment, where that segment's polynomial is still accurate.
    After the a2b everything is bit-sliced (one bit of 64 elements per word; bit permutations
    are local), so the range OR-tree and the decoder cost ~8 bytes per element instead of ~72.
    """
    f = x.f
    lo_bit = f + width_log2
    top = lo_bit + m  # |x| >= R iff some bit top .. 62 of (x XOR sign) is set
    if lo_bit < 0 or top >= 62 or not 1 <= m <= 5:
        raise ValueError("segment layout does not fit the ring")
    with party.op("segments"):
        bits = a2b(party, x)
        sign_all = BShare(bits.a >> 63, bits.b >> 63, party.pid)  # sign copied to every bit
        mag = bits ^ sign_all
        high = _planes(mag, list(range(top, 63)))
        index = _planes(mag, list(range(lo_bit, lo_bit + m)))
        sign = _planes(bits, [63])
        terms = _cat([_rows(index, m - 1, m).xor_public(-1), _rows(index, m - 1, m)])
        j = m - 2
        while high.a.shape[0] > 1 or j >= 0:  # OR tree and decoder levels share rounds
            pairs = []
            half = high.a.shape[0] // 2
            if half:
                pairs.append((_rows(high, 0, half), _rows(high, half, 2 * half)))
            if j >= 0:
                c = _rows(index, j, j + 1)
                n = terms.a.shape[0]
                lhs = _cat([terms, terms])
                rhs = _cat([c.xor_public(-1)] * n + [c] * n)
                pairs.append((lhs, rhs))
            prods = and_many(party, pairs)
            if half:
                a, b = _rows(high, 0, half), _rows(high, half, 2 * half)
                rest = [_rows(high, 2 * half, high.a.shape[0])] if high.a.shape[0] % 2 else []
                high = _cat([a ^ b ^ prods[0], *rest])  # OR
            if j >= 0:
                terms = prods[-1]  # rows: [t & ~c for t] + [t & c for t]: index bit j on top
                j -= 1
        n = terms.a.shape[0]
        (terms,) = and_many(party, [(terms, _cat([high.xor_public(-1)] * n))])
        numel = x.a.numel()
        order = _segment_order(m)
        shifts = torch.arange(n + 1)

        def words(t_terms: torch.Tensor, t_sign: torch.Tensor) -> torch.Tensor:
            per = torch.cat(
                [_from_planes(t_terms, numel)[:, order], _from_planes(t_sign, numel)], 1
            )
            return (per << shifts).sum(-1).reshape(x.shape)

        word = BShare(words(terms.a, sign.a), words(terms.b, sign.b), party.pid)
        ind = bits_to_arith(party, word, list(range(n + 1)))
        inds = [ind.map(lambda t, i=i: t[..., i]) for i in range(n)]
        return inds, ind.map(lambda t: t[..., n])


def _segment_order(m: int) -> list[int]:
    """Row of the decoder output that holds segment k, for k = 0 .. 2^m - 1: the decoder starts
    with rows [~b_{m-1}, b_{m-1}] and level j maps rows R to [R & ~b_j, R & b_j]; replay that on
    the segment numbers."""
    seg_of_row = [0, 1 << (m - 1)]
    for j in range(m - 2, -1, -1):
        seg_of_row = seg_of_row + [s + (1 << j) for s in seg_of_row]
    return [seg_of_row.index(k) for k in range(1 << m)]


__all__ = ["abs_segment_onehot", "segment_onehot"]
