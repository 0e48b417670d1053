"""Encrypted linear algebra: BSGS diagonal matvec, packed matrix-matrix products, slot sums.

Security assumption: the server holds W in plaintext and sees only ciphertexts (semi-honest);
nothing here decrypts. sealapi exposes no hoisted rotations, so baby-step rotations are
computed once per input and shared (`baby_steps`), and giant-step rotations run before the
rescale, at scale Delta * q, where their key-switching noise is negligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privinfer.errors import InputError
from privinfer.he import packing
from privinfer.he.ckks import Ciphertext, CkksContext, Plaintext


def _bsgs_split(d: int, baby: int | None) -> tuple[int, int]:
    n1 = baby or max(1, math.ceil(math.sqrt(d)))
    return n1, math.ceil(d / n1)


@dataclass
class EncodedMatrix:
    """W (m x n) pre-encoded as pre-rotated diagonals at one level, for `matvec`."""

    out_period: int  # output rows, zero-padded (the output's replication period)
    in_dim: int
    period: int  # input replication period (>= in_dim; W has zero columns beyond in_dim)
    out_cover: int
    level: int
    n1: int
    n2: int
    fold: list[int]
    plaintexts: dict[tuple[int, int], Plaintext] = field(repr=False)

    @property
    def input_cover(self) -> int:
        """How many slots of the replicated input must hold valid data."""
        span = self.out_cover + (self.period - self.out_period if self.fold else 0)
        return span + self.n1 * self.n2 - 1

    @property
    def output_clean(self) -> bool:
        """True when slots beyond out_cover are exactly zero (not so after a fold)."""
        return not self.fold

    def rotation_steps(self) -> set[int]:
        """Only the steps that non-zero diagonals use (sparse matrices need few keys)."""
        used = self.plaintexts.keys() if self.plaintexts else self._all_pairs()
        steps = {b for _, b in used if b} | {g * self.n1 for g, _ in used if g}
        return steps | set(self.fold)

    def _all_pairs(self) -> list[tuple[int, int]]:
        return [(g, b) for g in range(self.n2) for b in range(self.n1)]


def encode_matrix(
    ctx: CkksContext,
    w: np.ndarray,
    level: int | None,
    out_cover: int | None = None,
    baby: int | None = None,
    in_period: int | None = None,
) -> EncodedMatrix:
    """Pre-encode W for `matvec` on inputs at `level` (output at level - 1, same scale).

    The input is replicated with period `in_period` (default n; W gets zero columns up to
    it). Tall or square W uses in_period diagonals; wide W (in_period > m) gets zero rows up to
    the smallest divisor m' of in_period with m' >= m, uses m' diagonals and folds the partial
    sums with rotations by multiples of m'. The output has period `out_period` (m or m').
    With level=None only the plan (covers, steps) is made and nothing is encoded.
    """
    w = np.asarray(w, dtype=np.float64)
    m, n = w.shape
    period = in_period or n
    if period < n:
        raise InputError("The input period cannot be shorter than the input.")
    w = np.pad(w, ((0, 0), (0, period - n)))
    slots = ctx.params.slots
    fold: list[int] = []
    if period <= m:
        out_cover = out_cover or m
        d, span = period, out_cover
    else:
        m = next(q for q in range(m, period + 1) if period % q == 0)
        w = np.pad(w, ((0, m - w.shape[0]), (0, 0)))
        out_cover = out_cover or m
        k = period // m
        d, span = m, out_cover + period - m
        if k & (k - 1) == 0:
            fold = [(k >> (s + 1)) * m for s in range(k.bit_length() - 1)]
        else:
            fold = [t * m for t in range(1, k)]
    n1, n2 = _bsgs_split(d, baby)
    if span + n1 * n2 > slots:
        raise InputError(f"A {w.shape[0]}x{n} matrix does not fit one ciphertext of {slots} slots.")
    pts: dict[tuple[int, int], Plaintext] = {}
    for g in range(n2 if level is not None else 0):
        for b in range(n1):
            i = g * n1 + b
            if i >= d:
                break
            diag = np.zeros(slots)
            diag[:span] = packing.matvec_diagonal(w, i, span)
            if not diag.any():
                continue
            pts[(g, b)] = ctx.encode_for_mul(np.roll(diag, g * n1), level)
    return EncodedMatrix(w.shape[0], n, period, out_cover, level, n1, n2, fold, pts)


def baby_steps(ctx: CkksContext, ct: Ciphertext, n1: int) -> list[Ciphertext]:
    """rot(x, b) for b < n1: compute once, share across matrices with the same input."""
    return [ct] + [ctx.rotate(ct, b) for b in range(1, n1)]


def matvec(
    ctx: CkksContext, mat: EncodedMatrix, ct: Ciphertext, babies: list[Ciphertext] | None = None
) -> Ciphertext:
    """y = W x for a replicated input (period mat.period, cover >= mat.input_cover); 1 level."""
    if ctx.level(ct) != mat.level:
        ct = ctx.mod_switch_to(ct, mat.level)
        babies = None
    if babies is None:
        used = {b for _, b in mat.plaintexts}
        babies = [ctx.rotate(ct, b) if b in used else None for b in range(mat.n1)]
    ev = ctx.evaluator
    giants = []
    for g in range(mat.n2):
        terms = []
        for b in range(mat.n1):
            pt = mat.plaintexts.get((g, b))
            if pt is not None:
                terms.append(ctx.multiply_plain(babies[b], pt, rescale=False))
        if terms:
            giants.append(ctx.rotate(ctx.add_many(terms), g * mat.n1))
    if not giants:
        raise InputError("The matrix is all zeros.")
    out = ctx.add_many(giants)
    for step in mat.fold:
        out = ctx.add_many([out, ctx.rotate(out, step)])
    ev.rescale_to_next_inplace(out)
    return out


def replicate(ctx: CkksContext, ct: Ciphertext, period: int, cover: int, want: int) -> Ciphertext:
    """Extend a clean replicated vector (zeros beyond `cover`, a multiple of period) to `want`."""
    if cover % period:
        raise InputError("Replication needs a cover that is a multiple of the period.")
    while cover < want:
        ct = ctx.add_many([ct, ctx.rotate(ct, -cover)])
        cover *= 2
    return ct


def replicate_steps(period: int, cover: int, want: int, slots: int) -> set[int]:
    steps = set()
    while cover < want:
        steps.add((-cover) % slots)
        cover *= 2
    return steps


def window_sum(ctx: CkksContext, ct: Ciphertext, width: int) -> Ciphertext:
    """Slot j gets sum_{u < width} x[j + u] (log2(width) + popcount rotations, no level)."""
    acc, acc_w = None, 0
    power, power_w = ct, 1
    bit = 0
    while (1 << bit) <= width:
        if width >> bit & 1:
            shifted = ctx.rotate(power, acc_w) if acc is not None else power
            acc = shifted if acc is None else ctx.add_many([acc, shifted])
            acc_w += power_w
        if (2 << bit) <= width:
            power = ctx.add_many([power, ctx.rotate(power, power_w)])
            power_w *= 2
        bit += 1
    return acc


def window_sum_steps(width: int) -> set[int]:
    steps, acc_w, bit = set(), 0, 0
    while (1 << bit) <= width:
        if width >> bit & 1:
            if acc_w:
                steps.add(acc_w)
            acc_w += 1 << bit
        steps.add(1 << bit)
        bit += 1
    return steps


@dataclass
class PackedMatrix:
    """W (m x n) pre-encoded for T token-minor packed vectors (see `packing`).

    Diagonal i (taken as a signed offset in (-B/2, B/2]) is split i = g * n1 + s with
    0 <= s < n1 and g possibly negative, so a narrow band of diagonals (small W in a big
    block) needs only a few baby and giant rotation keys.
    """

    out_dim: int
    in_dim: int
    tokens: int
    block: int
    level: int
    n1: int
    plaintexts: dict[tuple[int, int, int, int], Plaintext] = field(repr=False)

    def rotation_steps(self) -> set[int]:
        t, used = self.tokens, self.plaintexts.keys()
        babies = {t} if any(s for *_, s in used) else set()
        return babies | {(1 if g > 0 else -1) * self.n1 * t for _, _, g, _ in used if g}


def encode_packed_matrix(
    ctx: CkksContext, w: np.ndarray, tokens: int, level: int, baby: int | None = None
) -> PackedMatrix:
    """Pre-encode W for `packed_matmul`: one plaintext per non-zero block diagonal."""
    w = np.asarray(w, dtype=np.float64)
    m, n = w.shape
    b = packing.token_blocks(ctx.params.slots, tokens)
    diags = {}
    for d in range(-(-m // b)):
        for c in range(-(-n // b)):
            for i in range(b):
                diag = packing.block_diagonal(w, d, c, i, b, tokens)
                if diag.any():
                    diags[(d, c, i if i <= b // 2 else i - b)] = diag
    offsets = [i for _, _, i in diags] or [0]
    n1 = baby or max(1, math.ceil(math.sqrt(max(offsets) - min(offsets) + 1)))
    pts: dict[tuple[int, int, int, int], Plaintext] = {}
    for (d, c, i), diag in diags.items():
        g = i // n1
        pts[(d, c, g, i - g * n1)] = ctx.encode_for_mul(np.roll(diag, g * n1 * tokens), level)
    return PackedMatrix(m, n, tokens, b, level, n1, pts)


def packed_matmul(ctx: CkksContext, mat: PackedMatrix, cts: list[Ciphertext]) -> list[Ciphertext]:
    """Y = X W^T for T packed vectors: inputs ceil(n/B) ciphertexts, outputs ceil(m/B); 1 level.

    Baby steps are chained rotations by T, giant steps run in Horner form with rotations by
    +-n1*T, so the whole product needs Galois keys for three steps only (T, n1*T, -n1*T).
    """
    cts = [ctx.mod_switch_to(ct, mat.level) for ct in cts]
    t = mat.tokens
    used = {(c, s) for _, c, _, s in mat.plaintexts}
    babies: dict[tuple[int, int], Ciphertext] = {}
    for c in sorted({c for c, _ in used}):
        cur = cts[c]
        for s in range(max(s for cc, s in used if cc == c) + 1):
            if s:
                cur = ctx.rotate(cur, t)
            babies[(c, s)] = cur
    groups: dict[tuple[int, int], list[tuple[int, int, Plaintext]]] = {}
    for (d, c, g, s), pt in mat.plaintexts.items():
        groups.setdefault((d, g), []).append((c, s, pt))
    giant = mat.n1 * t
    outs = []
    for d in range(-(-mat.out_dim // mat.block)):
        sums = {
            g: ctx.add_many(
                [ctx.multiply_plain(babies[(c, s)], pt, rescale=False) for c, s, pt in terms]
            )
            for (dd, g), terms in groups.items()
            if dd == d
        }
        if not sums:
            raise InputError("A block row of the matrix is all zeros.")
        outs.append(_horner_giants(ctx, sums, giant))
    return outs


def packed_diagonals(
    w: np.ndarray, slots: int, tokens: int, out_block: int, baby: int | None = None
) -> tuple[int, dict[tuple[int, int, int], np.ndarray]]:
    """(n1, {(c, g, s): pre-rotated diagonal}) of block row `out_block` of W (numpy only).

    The split i = g * n1 + s is the one `encode_packed_matrix` makes (n1 from W's whole
    diagonal band, so every block row shares its baby steps)."""
    m, n = w.shape
    b = packing.token_blocks(slots, tokens)
    n1 = baby or streamed_n1(w.shape, slots, tokens)
    out: dict[tuple[int, int, int], np.ndarray] = {}
    for c in range(-(-n // b)):
        for i in range(b):
            diag = packing.block_diagonal(w, out_block, c, i, b, tokens)
            if diag.any():
                i_s = i if i <= b // 2 else i - b
                g = i_s // n1
                out[(c, g, i_s - g * n1)] = np.roll(diag, g * n1 * tokens)
    return n1, out


def packed_babies(
    ctx: CkksContext, cts: list[Ciphertext], tokens: int, n1: int
) -> dict[tuple[int, int], Ciphertext]:
    """rot(ct_c, s T) for s < n1, chained (one key switch each); share across matrices."""
    babies: dict[tuple[int, int], Ciphertext] = {}
    for c, ct in enumerate(cts):
        for s in range(n1):
            babies[(c, s)] = ct if s == 0 else ctx.rotate(babies[(c, s - 1)], tokens)
    return babies


def streamed_matmul(
    ctx: CkksContext,
    w: np.ndarray,
    cts: list[Ciphertext],
    tokens: int,
    babies: dict[tuple[int, int], Ciphertext] | None = None,
    n1: int | None = None,
) -> list[Ciphertext]:
    """Y = X W^T like `packed_matmul`, encoding each diagonal just before its product and
    dropping it after: ~n1 plaintexts alive instead of all of W's (memory), same cost.
    `babies` (from `packed_babies` with the same `n1`) may be shared by several matrices."""
    w = np.asarray(w, dtype=np.float64)
    level = min(ctx.level(ct) for ct in cts)
    cts = [ctx.mod_switch_to(ct, level) for ct in cts]
    slots = ctx.params.slots
    b = packing.token_blocks(slots, tokens)
    outs = []
    for d in range(-(-w.shape[0] // b)):
        n1, diags = packed_diagonals(w, slots, tokens, d, n1)
        if not diags:
            raise InputError("A block row of the matrix is all zeros.")
        if babies is None:
            babies = packed_babies(ctx, cts, tokens, n1)
        groups: dict[int, list[tuple[int, int]]] = {}
        for c, g, s in diags:
            groups.setdefault(g, []).append((c, s))
        sums = {}
        for g, terms in groups.items():
            prods = []
            for c, s in terms:
                pt = ctx.encode_for_mul(diags.pop((c, g, s)), level)
                prods.append(ctx.multiply_plain(babies[(c, s)], pt, rescale=False))
            sums[g] = ctx.add_many(prods)
        outs.append(_horner_giants(ctx, sums, n1 * tokens))
    return outs


def _horner_giants(ctx: CkksContext, sums: dict[int, Ciphertext], giant: int) -> Ciphertext:
    """sum_g rot(S_g, g G) in Horner form (rotations by +-G only), then the rescale."""
    parts = []
    for sign in (1, -1):
        gs = [g for g in sums if g * sign > 0]
        if not gs:
            continue
        acc = None
        for g in range(max(g * sign for g in gs), 0, -1):
            term = sums.get(g * sign)
            acc = term if acc is None else (acc if term is None else ctx.add(acc, term))
            acc = ctx.rotate(acc, sign * giant) if acc is not None else None
        parts.append(acc)
    if 0 in sums:
        parts.append(sums[0])
    out = ctx.add_many(parts)
    ctx.evaluator.rescale_to_next_inplace(out)
    return out


def streamed_n1(w_shape: tuple[int, int], slots: int, tokens: int, outputs: int = 1) -> int:
    """Baby steps of `streamed_matmul`: a power of two near sqrt(band * out / in) for W's
    diagonal band in one B x B block, so every giant rotation (n1 T) is one +-2^i key switch
    and babies (per input ciphertext) and giants (per output, `outputs` matrices) balance."""
    m, n = w_shape
    b = packing.token_blocks(slots, tokens)
    band = min(b, min(m, b) + min(n, b) - 1)
    ratio = outputs * -(-m // b) / -(-n // b)
    n1 = 1 << max(0, round(math.log2(math.sqrt(band * ratio))))
    return min(n1, 1 << (band - 1).bit_length())


def streamed_steps(w_shape: tuple[int, int], slots: int, tokens: int, n1: int = 0) -> set[int]:
    """Rotation steps `streamed_matmul` may use (T and +-n1 T)."""
    n1 = n1 or streamed_n1(w_shape, slots, tokens)
    return {tokens, n1 * tokens % slots, -n1 * tokens % slots}
