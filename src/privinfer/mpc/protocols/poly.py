"""Polynomial evaluation on replicated shares with log-depth powers and one folded
truncation for all public coefficients (semi-honest, honest majority; nothing is opened).

For degree d: ceil(log2 d) levels of batched products (3 rounds each) compute x^2..x^d at the
working precision; sum_k c_k x^k is then formed from raw ring products with the coefficients
encoded at `coef_bits` and truncated once (2 rounds). Error: about (d + 1) ulp of the working
precision plus the coefficient rounding 2^-coef_bits * sum_k |x^k|.
"""

from __future__ import annotations

import math

import torch

from privinfer.mpc.protocols.arith import raw_mul_many, scale_ring, trunc_many
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import RShare


def powers(party: Party, x: RShare, degree: int) -> list[RShare]:
    """[x^1, ..., x^degree] at x.f fractional bits (|x| <= ~1.5 keeps products below 2^62)."""
    pw: dict[int, RShare] = {1: x}
    have = 1
    while have < degree:
        pairs, targets = [], []
        for k in range(have + 1, min(2 * have, degree) + 1):
            pairs.append((pw[have], pw[k - have]))
            targets.append(k)
        raws = raw_mul_many(party, pairs)
        for k, r in zip(targets, trunc_many(party, raws, x.f), strict=True):
            pw[k] = r
        have = max(targets)
    return [pw[k] for k in range(1, degree + 1)]


def powers_for_dot(party: Party, x: RShare, degree: int) -> list[RShare]:
    """[x^1, ..., x^degree] for a following dot product with coefficients: powers that feed a
    later product are truncated back to x.f, the others are left raw at 2 x.f (|x| <= ~1.5 and
    2 x.f <= ~44 keep them and their coefficient products below 2^62). Same levels as `powers`;
    a level whose products all stay raw needs no truncation rounds (degree 4: 4 rounds and 40
    bytes per element instead of 6 rounds and 72 bytes)."""
    plan: list[list[tuple[int, int, int]]] = []  # per level: (k, a, b) with x^k = x^a x^b
    have = 1
    while have < degree:
        plan.append([(k, have, k - have) for k in range(have + 1, min(2 * have, degree) + 1)])
        have = plan[-1][-1][0]
    operands = {a for level in plan for _, a, b in level} | {b for lv in plan for _, _, b in lv}
    pw: dict[int, RShare] = {1: x}
    for level in plan:
        raws = raw_mul_many(party, [(pw[a], pw[b]) for _, a, b in level])
        cut = [(k, r) for (k, _, _), r in zip(level, raws, strict=True) if k in operands]
        for (k, _), r in zip(cut, trunc_many(party, [r for _, r in cut], x.f), strict=True):
            pw[k] = r
        for (k, _, _), r in zip(level, raws, strict=True):
            pw.setdefault(k, r)
    return [pw[k] for k in range(1, degree + 1)]


def combine(
    party: Party, pw: list[RShare], coeffs: torch.Tensor, out_f: int, headroom_bits: int = 60
) -> RShare:
    """sum_k coeffs[k] * x^k (coeffs[0] is the constant; extra leading dims of `coeffs` broadcast
    against the powers' leading dims) truncated once to `out_f`."""
    coeffs = torch.as_tensor(coeffs, dtype=torch.float64)
    work_f = pw[0].f
    cmax = float(coeffs.abs().max()) * len(pw) + 1.0
    coef_bits = headroom_bits - work_f - max(0, math.ceil(math.log2(cmax)))
    coef_bits = max(0, min(coef_bits, 40))
    acc = None
    for k, p in enumerate(pw, start=1):
        term = scale_ring(p, coeffs[..., k], coef_bits)
        acc = term if acc is None else acc + term
    assert acc is not None
    const = torch.round(coeffs[..., 0] * 2.0 ** (work_f + coef_bits)).to(torch.int64)
    acc = acc.add_ring(const)
    (out,) = trunc_many(party, [acc], out_f)
    return out


def poly_eval(party: Party, x: RShare, coeffs: list[float] | torch.Tensor, out_f: int) -> RShare:
    """p(x) = sum_k coeffs[k] x^k, x at its own (working) precision, result at `out_f`."""
    coeffs = torch.as_tensor(coeffs, dtype=torch.float64)
    pw = powers(party, x, coeffs.shape[-1] - 1)
    return combine(party, pw, coeffs, out_f)
