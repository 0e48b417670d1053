"""Slot layouts for CKKS packing (plaintext-side numpy only; no secrets beyond what is packed).

Two layouts, both documented here and used by `he.linear`:

* **Replicated vector** (one vector per ciphertext, for `matvec`): slot j holds x[j mod n]
  for j < cover; slots at and beyond `cover` hold zeros. The diagonal (Halevi-Shoup) method
  reads x[(j + i) mod n] at slot j + i, so a matrix needs cover >= out_cover + n - 1.
* **Token-minor blocks** (T vectors packed together, for matrix-matrix products): with
  S slots and T a power of two dividing S, a ciphertext holds B = S / T features of all T
  vectors, slot f * T + t = X[t, c * B + f] for ciphertext c. Rotating by i * T cycles the
  features of every token at once (cyclic because B * T = S), so a B x B block of W needs B
  diagonals shared by all T tokens.
"""

from __future__ import annotations

import numpy as np

from privinfer.errors import InputError


def replicated_vector(x: np.ndarray, cover: int, slots: int) -> np.ndarray:
    """Slot vector holding x cyclically on [0, cover), zeros after."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if cover > slots:
        raise InputError(f"A replicated vector of cover {cover} does not fit in {slots} slots.")
    out = np.zeros(slots)
    out[:cover] = x[np.arange(cover) % x.size]
    return out


def matvec_diagonal(w: np.ndarray, i: int, length: int) -> np.ndarray:
    """Generalised diagonal i of W (m x n): entry j is W[j mod m, (j + i) mod n], j < length."""
    m, n = w.shape
    j = np.arange(length)
    return w[j % m, (j + i) % n]


def token_blocks(slots: int, tokens: int) -> int:
    """Features per ciphertext (B) for T packed tokens; T must be a power of two dividing S."""
    if tokens < 1 or tokens & (tokens - 1) or slots % tokens:
        raise InputError(
            f"Packed token count must be a power of two dividing {slots}, got {tokens}."
        )
    return slots // tokens


def pack_tokens(x: np.ndarray, slots: int, tokens: int | None = None) -> list[np.ndarray]:
    """Pack X (T x n) into ceil(n / B) token-minor slot vectors (T padded to a power of two)."""
    x = np.asarray(x, dtype=np.float64)
    t_real, n = x.shape
    tokens = tokens or 1 << max(0, (t_real - 1).bit_length())
    if t_real > tokens:
        raise InputError(f"{t_real} tokens do not fit a packing for {tokens}.")
    b = token_blocks(slots, tokens)
    padded = np.zeros((tokens, -(-n // b) * b))
    padded[:t_real, :n] = x
    return [
        padded[:, c * b : (c + 1) * b].T.reshape(-1).copy() for c in range(padded.shape[1] // b)
    ]


def unpack_tokens(vectors: list[np.ndarray], tokens: int, n: int, t_real: int) -> np.ndarray:
    """Inverse of `pack_tokens`: back to (t_real x n)."""
    b = vectors[0].size // tokens
    cols = [np.asarray(v)[: b * tokens].reshape(b, tokens).T for v in vectors]
    return np.concatenate(cols, axis=1)[:t_real, :n]


def block_diagonal(
    w: np.ndarray, out_block: int, in_block: int, i: int, b: int, tokens: int
) -> np.ndarray:
    """Token-minor diagonal i of block (out_block, in_block) of W, broadcast over T tokens.

    Entry f * T + t is W[out_block * B + f, in_block * B + (f + i) mod B] (zero outside W).
    """
    m, n = w.shape
    f = np.arange(b)
    rows = out_block * b + f
    cols = in_block * b + (f + i) % b
    ok = (rows < m) & (cols < n)
    vals = np.zeros(b)
    vals[ok] = w[rows[ok], cols[ok]]
    return np.repeat(vals, tokens)


def naf_steps(step: int, slots: int) -> list[int]:
    """A rotation by `step` as signed powers of two (non-adjacent form, fewest terms), each
    returned mod slots: with Galois keys for +-2^i only, any rotation costs <= log2(S)/2 + 1."""
    step %= slots
    if step > slots // 2:
        step -= slots
    out, k, bit = [], step, 0
    while k:
        if k & 1:
            digit = 2 - (k & 3)  # +1 or -1
            out.append((digit << bit) % slots)
            k -= digit
        k >>= 1
        bit += 1
    return out


def power_of_two_steps(slots: int) -> set[int]:
    """+-2^i mod slots: the Galois key set that reaches every rotation through `naf_steps`."""
    return {(sign << i) % slots for i in range(slots.bit_length() - 1) for sign in (1, -1)}
