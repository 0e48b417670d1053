"""Multiplication, matrix products and public scaling of replicated shares (semi-honest,
honest majority; fresh zero-sharings from pairwise PRF keys hide the resharing messages).

A product of shares with f_x and f_y fractional bits has f_x + f_y; it is truncated back to
max(f_x, f_y) (or `out_f`) with `trunc.trunc`. Mul/matmul: one resharing round, plus the two
truncation rounds when a truncation is needed. Bits and integers use f = 0, so multiplying by
them needs no truncation. Exact up to the truncation's +-1 ulp for products below 2^62.
Products with a big operand (a weight matrix) add the two components of the small one
(x_i + x_{i+1}) y_i + x_i y_{i+1}: SmolLM2 decode linear layers 3x faster than summing the
weight halves per call. A sum of products costs one product's message (`raw_dot_many`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from privinfer.mpc.protocols.trunc import trunc, trunc_mixed
from privinfer.mpc.ring import encode, ring_matmul, ring_vecmat
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import RShare


def _reshare(party: Party, z: torch.Tensor, f: int) -> RShare:
    z = z + party.rand.zero_share(z.shape)
    return RShare(z, party.send_prev_recv_next(z), party.pid, f)


def _cross_terms(
    x: RShare, y: RShare, local: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """x_i y_i + x_i y_{i+1} + x_{i+1} y_i, with the component sum taken on the smaller operand
    (for a weight matrix y, (x_i + x_{i+1}) y_i + x_i y_{i+1} never adds the big halves)."""
    if x.a.numel() <= y.a.numel():
        if (
            local is ring_matmul
            and x.a.dim() == 2
            and x.a.shape[0] == 1
            and y.a.dim() == 2
            and y.a.is_contiguous()
            and y.b.is_contiguous()
        ):  # one row against a weight: two chained matrix-vector products, no extra sum
            first = ring_vecmat((x.a + x.b)[0], y.a)
            return ring_vecmat(x.a[0], y.b, first).unsqueeze(0)
        return local(x.a + x.b, y.a) + local(x.a, y.b)
    return local(x.a, y.a + y.b) + local(x.b, y.a)


def _product(
    party: Party,
    x: RShare,
    y: RShare,
    local: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    out_f: int | None,
) -> RShare:
    z = _cross_terms(x, y, local)
    raw = _reshare(party, z, x.f + y.f)
    target = max(x.f, y.f) if out_f is None else out_f
    return trunc(party, raw, raw.f - target)


def mul(party: Party, x: RShare, y: RShare, out_f: int | None = None) -> RShare:
    """Elementwise (broadcasting) product of two shared tensors."""
    with party.op("mul"):
        return _product(party, x, y, torch.mul, out_f)


def square(party: Party, x: RShare, out_f: int | None = None) -> RShare:
    """Elementwise square."""
    return mul(party, x, x, out_f)


def matmul(party: Party, x: RShare, y: RShare, out_f: int | None = None) -> RShare:
    """Matrix product of two shared tensors (torch.matmul broadcasting), exact mod 2^64 before
    the truncation."""
    with party.op("matmul"):
        return _product(party, x, y, ring_matmul, out_f)


def matmul_public(
    party: Party, x: RShare, w: torch.Tensor, w_frac_bits: int | None = None
) -> RShare:
    """x @ w for a public real matrix `w` (encoded with `w_frac_bits`); local product then one
    truncation (2 rounds)."""
    fw = party.f if w_frac_bits is None else w_frac_bits
    enc = encode(w, fw)
    with party.op("matmul"):
        raw = RShare(ring_matmul(x.a, enc), ring_matmul(x.b, enc), party.pid, x.f + fw)
        return trunc(party, raw, fw)


def mul_public(party: Party, x: RShare, c: torch.Tensor | float, c_frac_bits: int = 24) -> RShare:
    """x * c for a public real scalar or tensor `c` (|c| * 2^c_frac_bits * |x| below 2^62)."""
    enc = encode(c, c_frac_bits)
    with party.op("mul"):
        return trunc(party, x.mul_ring(enc).with_f(x.f + c_frac_bits), c_frac_bits)


def mul_bits(party: Party, bits: RShare, xs: list[RShare]) -> list[RShare]:
    """Multiply each of `xs` by the same shared 0/1 tensor `bits` (f=0) in one round."""
    with party.op("mul"):
        zs = [bits.a * (x.a + x.b) + bits.b * x.a for x in xs]
        flat = torch.cat([z.reshape(-1) for z in zs])
        shared = _reshare(party, flat, 0)
        out, start = [], 0
        for x, z in zip(xs, zs, strict=True):
            n = z.numel()
            out.append(
                RShare(
                    shared.a[start : start + n].reshape(z.shape),
                    shared.b[start : start + n].reshape(z.shape),
                    party.pid,
                    x.f,
                )
            )
            start += n
        return out


def mul_many(party: Party, pairs: list[tuple[RShare, RShare]], out_f: int) -> list[RShare]:
    """Several elementwise products, each truncated to `out_f`, batched into the same rounds."""
    with party.op("mul"):
        return trunc_many(party, raw_mul_many(party, pairs), out_f)


def raw_mul_many(party: Party, pairs: list[tuple[RShare, RShare]]) -> list[RShare]:
    """Untruncated products (f = f_x + f_y) of several pairs in one resharing round; the caller
    truncates (possibly after adding public-scaled terms) with `trunc_many`."""
    zs = [x.a * (y.a + y.b) + x.b * y.a for x, y in pairs]
    flat = torch.cat([z.reshape(-1) for z in zs])
    shared = _reshare(party, flat, 0)
    out, start = [], 0
    for (x, y), z in zip(pairs, zs, strict=True):
        n = z.numel()
        out.append(
            shared.map(lambda t, s=start, n=n, sh=z.shape: t[s : s + n].reshape(sh)).with_f(
                x.f + y.f
            )
        )
        start += n
    return out


def raw_products(party: Party, items: list[tuple[RShare, RShare, str]]) -> list[RShare]:
    """Untruncated products of several pairs, "mul" (elementwise, broadcasting) or "matmul",
    reshared together in one round; f = f_x + f_y."""
    zs = [
        _cross_terms(x, y, ring_matmul if kind == "matmul" else torch.mul) for x, y, kind in items
    ]
    flat = torch.cat([z.reshape(-1) for z in zs])
    shared = _reshare(party, flat, 0)
    out, start = [], 0
    for (x, y, _), z in zip(items, zs, strict=True):
        n, shape = z.numel(), z.shape
        out.append(
            shared.map(lambda t, s=start, n=n, sh=shape: t[s : s + n].reshape(sh)).with_f(x.f + y.f)
        )
        start += n
    return out


def raw_dot_many(party: Party, groups: list[list[tuple[RShare, RShare]]]) -> list[RShare]:
    """For each group, the untruncated sum of its elementwise products (all of one shape and one
    f_x + f_y): in replicated sharing a sum of products costs one product's message, so all
    groups are reshared together in one round, one element per output element."""
    zs = [sum(x.a * (y.a + y.b) + x.b * y.a for x, y in g) for g in groups]
    flat = torch.cat([z.reshape(-1) for z in zs])  # type: ignore[union-attr]
    shared = _reshare(party, flat, 0)
    out, start = [], 0
    for g, z in zip(groups, zs, strict=True):
        n, shape = z.numel(), z.shape  # type: ignore[union-attr]
        f = g[0][0].f + g[0][1].f
        out.append(shared.map(lambda t, s=start, n=n, sh=shape: t[s : s + n].reshape(sh)).with_f(f))
        start += n
    return out


def trunc_many(party: Party, xs: list[RShare], out_f: int) -> list[RShare]:
    """Truncate several shares to `out_f` fractional bits in one 2-round call (shifts may
    differ: `trunc.trunc_mixed`); shares already at `out_f` pass through."""
    idx = [k for k, x in enumerate(xs) if x.f != out_f]
    results = list(xs)
    if len(idx) == 1:
        results[idx[0]] = trunc(party, xs[idx[0]], xs[idx[0]].f - out_f)
    elif idx:
        outs = trunc_mixed(party, [xs[k] for k in idx], [xs[k].f - out_f for k in idx])
        for k, o in zip(idx, outs, strict=True):
            results[k] = o
    return results


def scale_ring(x: RShare, c: torch.Tensor | float, c_frac_bits: int) -> RShare:
    """x * encode(c, c_frac_bits), untruncated (f grows by c_frac_bits); local."""
    return x.mul_ring(encode(c, c_frac_bits)).with_f(x.f + c_frac_bits)


def raw_matmul(party: Party, x: RShare, y: RShare) -> RShare:
    """Untruncated matrix product (f = f_x + f_y), one resharing round."""
    return _reshare(party, _cross_terms(x, y, ring_matmul), x.f + y.f)
