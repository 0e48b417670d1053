"""Comparisons, selection, ReLU, max and argmax on replicated shares (semi-honest, honest
majority; nothing is opened).

ltz(x) = MSB of the ring value via a2b (8 rounds) + bit injection (2 rounds): exact for
|x| < 2^63. select: 1 round. max/argmax: tournament over the last dim, ceil(log2 n) levels of
(comparison + one batched select) = 11 rounds per level; ties go to the lower index, like
torch.argmax.
"""

from __future__ import annotations

import torch

from privinfer.mpc.protocols.arith import mul_bits
from privinfer.mpc.protocols.boolean import a2b, bits_to_arith
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import RShare, public_share


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
    while x.shape[-1] > 1:
        m = x.shape[-1]
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


def max_lastdim(party: Party, x: RShare) -> RShare:
    """Maximum over the last dim (exact)."""
    with party.op("max"):
        return _tournament(party, x, with_index=False)[0]


def argmax_lastdim(party: Party, x: RShare) -> tuple[RShare, RShare]:
    """(max, argmax) over the last dim; the index is shared as an integer (f=0)."""
    with party.op("argmax"):
        m, i = _tournament(party, x, with_index=True)
        return m, i  # type: ignore[return-value]
