"""Comparisons, selection, ReLU, max and argmax on replicated shares (semi-honest, honest
majority; nothing is opened).

ltz(x) = MSB of the ring value via a2b (8 rounds) + bit injection (2 rounds): exact for
|x| < 2^63. select: 1 round. max/argmax: tournament levels (comparison + one batched select,
11 rounds each) until at most 63 candidates remain and all their pairs cost at most 2
comparisons per input element; then one all-pairs round: every pair's sign (one a2b), each
candidate's "beats all others" bits packed in one word and AND-reduced (ceil(log2 n) rounds),
the winner's one-hot injected (2 rounds) and applied (1 round): 11 + ceil(log2 n) rounds.
Decode-shaped attention rows (9 x 38) take 17 rounds instead of 66, 32-token prefill rows
(9 x 32 x 32) 36 instead of 55, 49,152 logits 127 instead of 176. Exact; ties go to the lower
index, like torch.argmax.
"""

from __future__ import annotations

import torch

from privinfer.mpc.protocols.arith import mul_bits
from privinfer.mpc.protocols.boolean import a2b, and_many, bits_to_arith
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import BShare, RShare, public_share

ALL_PAIRS_MAX_N = 63  # candidates' "beats" bits must fit one int64 word
ALL_PAIRS_PER_ELEMENT = 2  # all-pairs when its comparisons <= this many per input element


def ltz(party: Party, x: RShare) -> RShare:
    """Shares (f=0) of [x < 0]; exact on the whole ring. 10 rounds."""
    with party.op("compare"):
        return bits_to_arith(party, a2b(party, x), [63]).map(lambda t: t.squeeze(-1))


def ltz_many(party: Party, xs: list[RShare]) -> list[RShare]:
    """[x < 0] for several tensors in the same 10 rounds."""
    flat = RShare.cat([x.map(lambda t: t.reshape(-1)) for x in xs])
    bits = ltz(party, flat)
    out, start = [], 0
    for x in xs:
        n = x.a.numel()
        out.append(bits.map(lambda t, s=start, n=n, sh=x.shape: t[s : s + n].reshape(sh)))
        start += n
    return out


def less_than(party: Party, x: RShare, y: RShare) -> RShare:
    """[x < y] (f=0), exact while |x - y| < 2^63 as ring integers."""
    return ltz(party, x - y)


def greater_than_public(party: Party, x: RShare, c: float) -> RShare:
    """[x > c] for a public real c (ties at the encoded c give 0)."""
    return ltz(party, (-x).add_public(c))


def select(party: Party, bit: RShare, if_one: RShare, if_zero: RShare) -> RShare:
    """bit ? if_one : if_zero, with `bit` shared 0/1 (f=0). One round."""
    with party.op("select"):
        (d,) = mul_bits(party, bit, [if_one - if_zero])
        return if_zero + d


def relu(party: Party, x: RShare) -> RShare:
    """max(x, 0): exact (11 rounds)."""
    with party.op("relu"):
        neg = ltz(party, x)
        (prod,) = mul_bits(party, neg, [x])
        return x - prod


def clip_public(party: Party, x: RShare, lo: float | None, hi: float | None) -> RShare:
    """Clamp x to [lo, hi] (public bounds): both comparisons share the same 10 rounds, then one
    batched select round."""
    with party.op("clip"):
        tests, outs = [], []
        if lo is not None:
            tests.append(x.add_public(-lo))  # x < lo
        if hi is not None:
            tests.append((-x).add_public(hi))  # x > hi
        bits = ltz_many(party, tests)
        k = 0
        terms = []
        if lo is not None:
            terms.append((bits[k], (-x).add_public(lo)))
            k += 1
        if hi is not None:
            terms.append((bits[k], (-x).add_public(hi)))
        flat_bits = RShare.cat([b.map(lambda t: t.reshape(-1)) for b, _ in terms])
        flat_vals = RShare.cat([v.map(lambda t: t.reshape(-1)) for _, v in terms])
        (prod,) = mul_bits(party, flat_bits, [flat_vals])
        n = x.a.numel()
        for j in range(len(terms)):
            outs.append(prod.map(lambda t, j=j: t[j * n : (j + 1) * n].reshape(x.shape)))
        for o in outs:
            x = x + o
        return x


def _tournament(party: Party, x: RShare, with_index: bool) -> tuple[RShare, RShare | None]:
    n = x.shape[-1]
    idx = None
    if with_index:
        idx = public_share(party, torch.arange(n, dtype=torch.float64).expand(x.shape), f=0)
    budget = max(ALL_PAIRS_PER_ELEMENT * x.a.numel(), 1 << 14)
    while x.shape[-1] > 1:
        m = x.shape[-1]
        if m <= ALL_PAIRS_MAX_N and (x.a.numel() // m) * m * (m - 1) // 2 <= budget:
            return _all_pairs(party, x, idx)
        even = m - (m % 2)
        left = x.map(lambda t, e=even: t[..., 0:e:2])
        right = x.map(lambda t, e=even: t[..., 1:e:2])
        take_right = ltz(party, left - right)  # left < right
        vals = [right - left]
        if idx is not None:
            il = idx.map(lambda t, e=even: t[..., 0:e:2])
            ir = idx.map(lambda t, e=even: t[..., 1:e:2])
            vals.append(ir - il)
        prods = mul_bits(party, take_right, vals)
        new_x = left + prods[0]
        if m % 2:
            new_x = RShare.cat([new_x, x.map(lambda t: t[..., -1:])], dim=-1)
        if idx is not None:
            new_idx = il + prods[1]
            if m % 2:
                new_idx = RShare.cat([new_idx, idx.map(lambda t: t[..., -1:])], dim=-1)
            idx = new_idx
        x = new_x
    squeeze = x.map(lambda t: t.squeeze(-1))
    return squeeze, None if idx is None else idx.map(lambda t: t.squeeze(-1))


def _all_pairs(party: Party, x: RShare, idx: RShare | None) -> tuple[RShare, RShare | None]:
    """The exact max (and the index held in `idx`) of n <= 63 candidates from all pairs."""
    n = x.shape[-1]
    ii, jj, pos, fill = _pair_consts(n)
    sign = a2b(party, x.map(lambda t: t[..., ii] - t[..., jj])).rshift(63)  # [x_i < x_j], i < j
    beats = sign.xor_public(1)  # i beats a later j when x_i >= x_j; a later j beats i if x_j > x_i

    def words(s_t: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
        grid = torch.zeros((*s_t.shape[:-1], n, n), dtype=torch.int64)
        grid[..., ii, jj] = b_t
        grid[..., jj, ii] = s_t
        return (grid << pos).sum(-1)

    word = BShare(words(sign.a, beats.a), words(sign.b, beats.b), party.pid)
    word = word.xor_public(fill)  # self and unused bits are 1
    k = 1
    while k < n:  # AND of every bit down to bit 0
        (word,) = and_many(party, [(word, word.rshift(k))])
        k *= 2
    win = bits_to_arith(party, word, [0]).map(lambda t: t.squeeze(-1))
    vals = [x] if idx is None else [x, idx]
    prods = mul_bits(party, win, vals)
    sums = [p.map(lambda t: t.sum(-1)) for p in prods]
    return sums[0], None if idx is None else sums[1]


_PAIR_CACHE: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _pair_consts(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Public constants of `_all_pairs` for n candidates (built once per n): the pair indices
    i < j, the bit positions and the word with the self and unused bits set."""
    got = _PAIR_CACHE.get(n)
    if got is None:
        ii, jj = torch.triu_indices(n, n, 1)
        pos = torch.arange(n, dtype=torch.int64)
        got = _PAIR_CACHE[n] = (ii, jj, pos, (1 << pos) | ~((1 << n) - 1))
    return got


def max_lastdim(party: Party, x: RShare) -> RShare:
    """Maximum over the last dim (exact)."""
    with party.op("max"):
        return _tournament(party, x, with_index=False)[0]


def argmax_lastdim(party: Party, x: RShare) -> tuple[RShare, RShare]:
    """(max, argmax) over the last dim; the index is shared as an integer (f=0)."""
    with party.op("argmax"):
        m, i = _tournament(party, x, with_index=True)
        return m, i  # type: ignore[return-value]
