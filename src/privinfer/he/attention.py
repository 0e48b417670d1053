"""Ciphertext-ciphertext attention products (Q K^T and A V) in the token-minor packing.

Security assumption: the server sees only ciphertexts of Q, K, V and of the scores; token
count, head layout and the causal mask are public.

Packing ("diagonal scores"): Q, K, V are (T x d) token-minor packed (`he.packing`): slot
f * T + t holds row t, feature f; B = S / T features per ciphertext, heads of `head_dim`
(a power of two dividing B) stay inside one ciphertext. The scores are returned as T
ciphertexts D_r, r < T, one per cyclic diagonal: D_r at slot f * T + t holds
score(t, (t + r) mod T) of the head that owns feature f, copied over all its features. So
softmax row sums are plain additions of the D_r (no rotation), the causal mask is a public
0/1 multiply per diagonal, and A V = sum_r A_r * rot_tokens(V, r).
Levels: `scores` 3 (token rotation masks, product, head-sum mask); `weighted_values` 2.
"""

from __future__ import annotations

import numpy as np

from privinfer.errors import InputError
from privinfer.he.ckks import Ciphertext, CkksContext


def rotate_tokens(ctx: CkksContext, ct: Ciphertext, r: int, tokens: int) -> Ciphertext:
    """Slot f*T + t gets slot f*T + (t + r) mod T (two rotations, two masks; one level)."""
    slots = ctx.params.slots
    t = np.arange(slots) % tokens
    low = (t < tokens - r).astype(np.float64)
    if r % tokens == 0:
        return ctx.multiply_values(ct, low)
    a = ctx.multiply_values(ctx.rotate(ct, r), low)
    b = ctx.multiply_values(ctx.rotate(ct, r - tokens), 1.0 - low)
    return ctx.add(a, b)


def rotate_tokens_steps(tokens: int, slots: int) -> set[int]:
    return {r for r in range(1, tokens)} | {(r - tokens) % slots for r in range(1, tokens)}


def head_sum(
    ctx: CkksContext, ct: Ciphertext, tokens: int, head_dim: int, factor: float = 1.0
) -> Ciphertext:
    """Sum over each head's features, times `factor`, copied back to all of them; one level."""
    slots = ctx.params.slots
    if head_dim & (head_dim - 1) or (slots // tokens) % head_dim:
        raise InputError("head_dim must be a power of two dividing the features per ciphertext.")
    step = 1
    while step < head_dim:
        ct = ctx.add_many([ct, ctx.rotate(ct, step * tokens)])
        step *= 2
    feature = np.arange(slots) // tokens
    ct = ctx.multiply_values(ct, factor * (feature % head_dim == 0))
    step = 1
    while step < head_dim:
        ct = ctx.add_many([ct, ctx.rotate(ct, -step * tokens)])
        step *= 2
    return ct


def head_sum_steps(tokens: int, head_dim: int, slots: int) -> set[int]:
    steps, step = set(), 1
    while step < head_dim:
        steps |= {step * tokens, (-step * tokens) % slots}
        step *= 2
    return steps


def scores(
    ctx: CkksContext,
    q: Ciphertext,
    k: Ciphertext,
    tokens: int,
    head_dim: int,
    factor: float | None = None,
    diagonals: list[int] | None = None,
) -> list[Ciphertext]:
    """Diagonals D_r (r in `diagonals`, default all) of Q K^T * factor (default 1/sqrt(d))."""
    factor = 1.0 / float(np.sqrt(head_dim)) if factor is None else factor
    out = []
    for r in range(tokens) if diagonals is None else diagonals:
        prod = ctx.multiply(q, rotate_tokens(ctx, k, r, tokens))
        out.append(head_sum(ctx, prod, tokens, head_dim, factor))
    return out


def causal_masks(tokens: int, slots: int, valid: int | None = None) -> list[np.ndarray]:
    """Public 0/1 masks: diagonal r keeps score(t, t') only if t' = (t + r) mod T <= t < valid."""
    valid = tokens if valid is None else valid
    t = np.arange(slots) % tokens
    return [(((t + r) % tokens <= t) & (t < valid)).astype(np.float64) for r in range(tokens)]


def weighted_values(
    ctx: CkksContext, probs: list[Ciphertext], v: Ciphertext, tokens: int
) -> Ciphertext:
    """A V: sum_r A_r * rot_tokens(V, r), with A's diagonals `probs` as from `scores`."""
    if len(probs) != tokens:
        raise InputError("Attention needs one probability diagonal per token.")
    terms = [ctx.multiply(p, rotate_tokens(ctx, v, r, tokens)) for r, p in enumerate(probs)]
    level = min(ctx.level(x) for x in terms)
    return ctx.add_many([ctx.mod_switch_to(x, level) for x in terms])


def diagonals_to_matrix(diags: list[np.ndarray], tokens: int, feature: int = 0) -> np.ndarray:
    """Plaintext helper (client side, tests): read the T x T score matrix of one feature row."""
    mat = np.zeros((tokens, tokens))
    for r, d in enumerate(diags):
        row = np.asarray(d)[feature * tokens : (feature + 1) * tokens]
        for t in range(tokens):
            mat[t, (t + r) % tokens] = row[t]
    return mat
