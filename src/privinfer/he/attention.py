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

HeOps uses the **packed** variant below whenever the active diagonals fit (n <= head_dim / 2,
e.g. T = 16 with MiniLM's head_dim 32): all n diagonals of all heads in one ciphertext, so the
softmax (exp, squarings, 1/x, refreshes) runs on one ciphertext instead of n. Same 3 + 2 levels.
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


# ---- packed scores: all score diagonals of a block of heads in ONE ciphertext -------------
#
# With n active diagonals and n <= head_dim / 2, diagonal j (r = diagonals[j]) of head h sits
# at feature h * head_dim + j: slot (h * head_dim + j) * T + t holds score(t, (t + r) mod T).
# Features j >= n of every head are zero (softmax masks keep them so), which lets row sums run
# as one window sum (no level) and makes softmax cost one ciphertext instead of n.


def packed_fits(n_diagonals: int, tokens: int, head_dim: int, slots: int) -> bool:
    """True when n diagonals fit the packed layout (n <= head_dim / 2, head_dim | B, 2^k)."""
    return (
        0 < n_diagonals <= head_dim // 2
        and head_dim & (head_dim - 1) == 0
        and (slots // tokens) % head_dim == 0
    )


def _token_masks(ctx: CkksContext, tokens: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(ctx.params.slots) % tokens
    low = (t < tokens - r).astype(np.float64)
    return low, 1.0 - low


def rotated_tokens_chain(
    ctx: CkksContext, ct: Ciphertext, tokens: int, diagonals: list[int]
) -> dict[int, Ciphertext]:
    """rotate_tokens(ct, r) for every r in `diagonals`, with chained single-step rotations
    (rot(ct, r) = rot(rot(ct, r - 1), 1): one key switch per step instead of a NAF chain)."""
    out: dict[int, Ciphertext] = {}
    a, b = ct, ctx.rotate(ct, -tokens)
    want = set(diagonals)
    for r in range(max(diagonals) + 1):
        if r:
            a, b = ctx.rotate(a, 1), ctx.rotate(b, 1)
        if r not in want:
            continue
        if r % tokens == 0:
            out[r] = ctx.multiply_values(a, 1.0)
            continue
        low, high = _token_masks(ctx, tokens, r)
        out[r] = ctx.add(ctx.multiply_values(a, low), ctx.multiply_values(b, high))
    return out


def rotated_tokens_steps(tokens: int, slots: int) -> set[int]:
    return {1, (-tokens) % slots}


def packed_scores(
    ctx: CkksContext,
    q: Ciphertext,
    k: Ciphertext,
    tokens: int,
    head_dim: int,
    factor: float,
    diagonals: list[int],
) -> Ciphertext:
    """Score diagonals of Q K^T * factor in the packed layout (see above); 3 levels.

    Per diagonal: a token rotation of K (chained), one product, a head sum by log2(head_dim)
    rotations and a public mask; the masked sums are merged in Horner form with rotations by
    -T (one key switch per diagonal).
    """
    slots = ctx.params.slots
    if not packed_fits(len(diagonals), tokens, head_dim, slots):
        raise InputError("These score diagonals do not fit the packed layout.")
    feature = np.arange(slots) // tokens
    first = factor * (feature % head_dim == 0)
    keys = rotated_tokens_chain(ctx, k, tokens, diagonals)
    sums = []
    for r in diagonals:
        prod = ctx.multiply(q, keys.pop(r))
        step = 1
        while step < head_dim:
            prod = ctx.add_many([prod, ctx.rotate(prod, step * tokens)])
            step *= 2
        sums.append(ctx.multiply_values(prod, first))
    acc = sums[-1]
    for s in reversed(sums[:-1]):  # Horner: sum_j rot(S_j, -j T)
        acc = ctx.add(ctx.rotate(acc, -tokens), s)
    return acc


def packed_row_sum(ctx: CkksContext, p: Ciphertext, tokens: int, head_dim: int) -> Ciphertext:
    """Slot (h D + j) T + t gets sum_j' p at (h D + j') T + t for every j < D / 2 (no level):
    a window of D features starting D / 2 before; exact because features >= D / 2 are zero."""
    step = 1
    while step < head_dim:
        p = ctx.add_many([p, ctx.rotate(p, step * tokens)])
        step *= 2
    return ctx.rotate(p, -(head_dim // 2) * tokens)


def packed_weighted_values(
    ctx: CkksContext,
    probs: Ciphertext,
    v: Ciphertext,
    tokens: int,
    head_dim: int,
    diagonals: list[int],
    row_scale: np.ndarray | None = None,
) -> Ciphertext:
    """A V from packed probabilities: sum_j bcast_j(A) * rotate_tokens(V, r_j); 2 levels.

    bcast_j copies feature h D + j over the head's D features (a chained rotation by T, a
    public mask times `row_scale` (per slot, e.g. 1 / count), log2(D) rotations by -2^i T).
    """
    slots = ctx.params.slots
    feature = np.arange(slots) // tokens
    mask = (feature % head_dim == 0).astype(np.float64)
    if row_scale is not None:
        mask = mask * row_scale
    values = rotated_tokens_chain(ctx, v, tokens, diagonals)
    terms = []
    cur = probs
    for j, r in enumerate(diagonals):
        if j:
            cur = ctx.rotate(cur, tokens)
        b = ctx.multiply_values(cur, mask)
        step = 1
        while step < head_dim:
            b = ctx.add_many([b, ctx.rotate(b, -step * tokens)])
            step *= 2
        terms.append(ctx.multiply(b, values.pop(r)))
    level = min(ctx.level(x) for x in terms)
    return ctx.add_many([ctx.mod_switch_to(x, level) for x in terms])


def packed_steps(tokens: int, head_dim: int, slots: int) -> set[int]:
    """Rotation steps of the packed path (each a +-2^i key when T and D are powers of two)."""
    steps = rotated_tokens_steps(tokens, slots) | {tokens, (-tokens) % slots}
    step = 1
    while step < head_dim:
        steps |= {step * tokens, (-step * tokens) % slots}
        step *= 2
    return steps | {(-(head_dim // 2) * tokens) % slots}


def packed_to_matrices(vec: np.ndarray, tokens: int, head_dim: int, diagonals: list[int],
                       head: int) -> np.ndarray:  # fmt: skip
    """Plaintext helper (client side, tests): head `head`'s T x T matrix from a packed vector."""
    mat = np.zeros((tokens, tokens))
    for j, r in enumerate(diagonals):
        f = head * head_dim + j
        for t in range(tokens):
            mat[t, (t + r) % tokens] = vec[f * tokens + t]
    return mat
