"""Polynomial approximations evaluated on CKKS ciphertexts (Chebyshev basis, power tree).

Security assumption: every coefficient, range and degree is public; only the slot values are
secret. Accuracy holds only inside the stated input range: outside it a polynomial grows
without bound, so callers must keep inputs in range (public calibration, pre-scaling).

Depth: `evaluate_chebyshev` of degree d uses at most ceil(log2 d) levels for T_k (power tree:
T_2k = 2 T_k^2 - 1, T_2k+1 = 2 T_k+1 T_k - T_1), one level for the coefficients and one for
the range normalisation unless the range has half-width 1 (a free scale relabel instead
would make the scales of T_k grow or shrink like h^k and ruin precision).
`chebyshev_depth` states the bound. The sum runs in Paterson-Stockmeyer form (baby steps
T_1..T_(b-1), giant steps T_b, T_2b, ..., Chebyshev division): degree 127 takes 24 ciphertext
products instead of 126 at the same depth. Scales are tracked exactly: constants are encoded
at whatever scale lands each term on the scale its parent needs, so no level is lost to aligning.
CKKS error of the Paterson-Stockmeyer sum (scale 2^30, measured on 8192 uniform inputs, vs
the polynomial): GELU fits on [-22.4, 29.8] deg 127 5.1e-4, [-17.7, 24.6] deg 63 5.5e-4,
[-11.2, 7.4] deg 31 2.2e-4, [-24, 24] deg 63 3.3e-3 (power tree: 4.7e-4); exp on [-2, 2]
deg 11 1.7e-4; i.e. ~1e-4 of the range's half-width.
Coefficients are fitted at import time with numpy (Chebyshev least squares on 4d+1 Chebyshev
nodes); the max errors quoted below were measured on a 20,001-point grid of the range, in
float64, before encryption (CKKS adds ~1e-4 at scale 2^30).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev as cheb

from privinfer.errors import InputError
from privinfer.he.ckks import Ciphertext, CkksContext


@dataclass(frozen=True)
class Approximation:
    """A Chebyshev fit of `name` on [lo, hi] with its measured max absolute error."""

    name: str
    lo: float
    hi: float
    coeffs: np.ndarray
    max_abs_error: float

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The polynomial in plaintext (for tests and error budgets)."""
        u = (2 * np.asarray(x, dtype=np.float64) - self.lo - self.hi) / (self.hi - self.lo)
        return cheb.chebval(u, self.coeffs)


def fit_chebyshev(
    name: str, fn: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, degree: int
) -> Approximation:
    """Least-squares Chebyshev fit on 4d+1 nodes; error measured on a 20,001-point grid.

    At Chebyshev nodes the T_j are discretely orthogonal, so the least-squares solution is
    the projection c_j = (2 / M) sum_k f(x_k) T_j(x_k) (c_0 halved): the same coefficients as
    `chebfit` (to 1e-13), without a dense solve (1.4 s for degree 127 on a loaded machine)."""
    k = np.arange(4 * degree + 1)
    theta = np.pi * (k + 0.5) / k.size
    nodes = np.cos(theta)
    values = fn((nodes * (hi - lo) + lo + hi) / 2)
    coeffs = (2.0 / k.size) * np.cos(np.outer(np.arange(degree + 1), theta)) @ values
    coeffs[0] /= 2
    grid = np.linspace(lo, hi, 20001)
    u = (2 * grid - lo - hi) / (hi - lo)
    err = float(np.abs(cheb.chebval(u, coeffs) - fn(grid)).max())
    return Approximation(name, lo, hi, coeffs, err)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# Measured max abs errors (float64, before encryption), reproduced by tests/he/test_poly.py:
GELU = fit_chebyshev("gelu", _gelu, -8.0, 8.0, 31)  # [-8, 8], degree 31: 6.7e-5
# Real MiniLM GELU inputs reach [-17, 25] (3 sentences, measured in plaintext): use the wide fit.
GELU_WIDE = fit_chebyshev("gelu", _gelu, -24.0, 24.0, 63)  # [-24, 24], degree 63: 3.9e-3
SILU = fit_chebyshev("silu", _silu, -8.0, 8.0, 31)  # [-8, 8], degree 31: 1.3e-5
SIGMOID = fit_chebyshev("sigmoid", _sigmoid, -8.0, 8.0, 31)  # [-8, 8], degree 31: 2.8e-6
EXP = fit_chebyshev("exp", np.exp, -16.0, 0.0, 15)  # [-16, 0], degree 15: 4.4e-7
RELU = fit_chebyshev("relu", lambda x: np.maximum(x, 0.0), -1.0, 1.0, 31)  # [-1, 1], deg 31: 9.7e-3


def chebyshev_depth(degree: int, lo: float = -1.0, hi: float = 1.0) -> int:
    """Levels consumed by `evaluate_chebyshev` for this degree and range."""
    if degree < 1:
        return 0
    norm = 0 if (hi - lo) / 2 == 1.0 else 1
    return norm + math.ceil(math.log2(degree)) + 1 if degree > 1 else norm + 1


def _normalise(ctx: CkksContext, ct: Ciphertext, lo: float, hi: float) -> Ciphertext:
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    if centre != 0.0:
        ct = ctx.add_plain(ct, -centre)
    if half != 1.0:
        ct = ctx.multiply_scalar_to(ct, 1.0 / half, ctx.scale)
    return ct


class _ChebyshevBasis:
    """T_k(u) for a ciphertext u, computed on demand by the power tree (depth ceil(log2 k))."""

    def __init__(self, ctx: CkksContext, u: Ciphertext):
        self.ctx = ctx
        self.t = {1: u}

    def get(self, k: int) -> Ciphertext:
        if k in self.t:
            return self.t[k]
        ctx = self.ctx
        a, b = (k + 1) // 2, k // 2
        prod = ctx.multiply(self.get(a), self.get(b))
        twice = ctx.add_many([prod, prod])
        if a == b:
            out = ctx.add_plain(twice, -1.0)
        else:
            t1 = ctx.to_level_scale(self.t[1], ctx.level(twice), twice.scale)
            out = ctx.sub(twice, t1)
        self.t[k] = out
        return out


TINY = 1e-9  # coefficients below CKKS noise are dropped (a zero plaintext would be refused)


def chebyshev_divide(c: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """p = q T_g + r in the Chebyshev basis (deg p < 2g): q_0 = c_g, q_j = 2 c_(g+j),
    r_(g-j) = c_(g-j) - c_(g+j) (from T_g T_j = (T_(g+j) + T_(g-j)) / 2); exact, stable."""
    n = len(c) - 1
    q = np.concatenate([[c[g]], 2.0 * c[g + 1 :]])
    r = c[:g].copy()
    for j in range(1, n - g + 1):
        r[g - j] -= c[g + j]
    return q, r


class _PatersonStockmeyer:
    """sum_k c_k T_k(u) with baby steps T_1..T_(b-1) and giant steps T_b, T_2b, T_4b, ...:
    ~2 sqrt(d) + log2(d) ciphertext products instead of d for the plain power tree, the same
    depth (ceil(log2 d) + 1 after normalisation). Scales are exact: each leaf's scalars are
    encoded so that every product with a giant lands on the scale its parent asks for."""

    def __init__(self, ctx: CkksContext, basis: _ChebyshevBasis, degree: int) -> None:
        self.ctx, self.basis = ctx, basis
        self.b = 1 << max(1, math.ceil(math.log2(math.sqrt(degree + 1))))
        self.babies = {k: basis.get(k) for k in range(1, min(self.b, degree + 1))}
        self.baby_level = min(ctx.level(t) for t in self.babies.values())

    def _giant(self, n: int) -> int:
        return max(self.b, 1 << (n.bit_length() - 1))

    def level_of(self, c: np.ndarray) -> int | None:
        """Output level of `evaluate(c)`; None for a constant."""
        n = len(c) - 1
        if n < self.b:
            return self.baby_level - 1 if np.any(np.abs(c[1:]) >= TINY) else None
        g = self._giant(n)
        q, r = chebyshev_divide(c, g)
        lq, lr = self.level_of(q), self.level_of(r)
        lg = self.ctx.level(self.basis.get(g))
        prod = (lg if lq is None else min(lq, lg)) - 1
        return prod if lr is None else min(prod, lr)

    def evaluate(self, c: np.ndarray, scale: float) -> Ciphertext | float:
        """The polynomial at exactly `scale` (a float when it is a constant)."""
        ctx, n = self.ctx, len(c) - 1
        if n < self.b:
            ks = [k for k in range(1, n + 1) if abs(c[k]) >= TINY]
            if not ks:
                return float(c[0])
            prime = float(ctx.primes(self.baby_level)[-1])
            terms = []  # scalar products summed before ONE rescale (all at scale * prime)
            for k in ks:
                tk = ctx.mod_switch_to(self.babies[k], self.baby_level)
                pt = ctx.encode(float(c[k]), self.baby_level, scale * prime / tk.scale)
                terms.append(ctx.multiply_plain(tk, pt, rescale=False))
                terms[-1].scale = scale * prime  # equal up to double rounding
            out = ctx.add_many(terms)
            ctx.evaluator.rescale_to_next_inplace(out)
            out.scale = scale
            return ctx.add_plain(out, float(c[0]))
        g = self._giant(n)
        q, r = chebyshev_divide(c, g)
        tg = self.basis.get(g)
        lq = self.level_of(q)
        if lq is None:
            prod = ctx.multiply_scalar_to(tg, float(q[0]), scale)
        else:
            prime = float(ctx.primes(min(lq, ctx.level(tg)))[-1])
            a = self.evaluate(q, scale * prime / tg.scale)
            prod = ctx.multiply(a, tg)
            prod.scale = scale  # equal up to double rounding of the same product
        rest = self.evaluate(r, scale)
        return ctx.add_plain(prod, rest) if isinstance(rest, float) else ctx.add(prod, rest)


def chebyshev_sum(ctx: CkksContext, basis: _ChebyshevBasis, coeffs) -> Ciphertext:
    """sum_k c_k T_k(u) at the context's scale by Paterson-Stockmeyer (see above)."""
    coeffs = np.asarray(coeffs, dtype=np.float64)
    out = _PatersonStockmeyer(ctx, basis, len(coeffs) - 1).evaluate(coeffs, ctx.scale)
    if isinstance(out, float):
        raise InputError("A constant polynomial needs no ciphertext evaluation.")
    return out


def evaluate_chebyshev(
    ctx: CkksContext, ct: Ciphertext, coeffs, lo: float, hi: float
) -> Ciphertext:
    """sum_k c_k T_k(u), u = (2x - lo - hi) / (hi - lo); depth <= `chebyshev_depth`."""
    coeffs = np.asarray(coeffs, dtype=np.float64)
    degree = len(coeffs) - 1
    need = chebyshev_depth(degree, lo, hi)
    if ctx.level(ct) - need < ctx.params.floor_level:
        raise InputError(f"A degree-{degree} polynomial needs {need} levels; refresh first.")
    return chebyshev_sum(ctx, _ChebyshevBasis(ctx, _normalise(ctx, ct, lo, hi)), coeffs)


def evaluate(ctx: CkksContext, ct: Ciphertext, approx: Approximation) -> Ciphertext:
    """Apply an `Approximation` to every slot."""
    return evaluate_chebyshev(ctx, ct, approx.coeffs, approx.lo, approx.hi)


def gelu(ctx: CkksContext, ct: Ciphertext) -> Ciphertext:
    """GELU on [-8, 8]: degree 31, max abs error 6.7e-5 (float64); 7 levels."""
    return evaluate(ctx, ct, GELU)


def silu(ctx: CkksContext, ct: Ciphertext) -> Ciphertext:
    """SiLU on [-8, 8]: degree 31, max abs error 1.3e-5 (float64); 7 levels."""
    return evaluate(ctx, ct, SILU)


def sigmoid(ctx: CkksContext, ct: Ciphertext) -> Ciphertext:
    """Sigmoid on [-8, 8]: degree 31, max abs error 2.8e-6 (float64); 7 levels."""
    return evaluate(ctx, ct, SIGMOID)


def exp(ctx: CkksContext, ct: Ciphertext) -> Ciphertext:
    """exp on [-16, 0] (softmax after subtracting a public bound): degree 15, 4.4e-7; 6 levels."""
    return evaluate(ctx, ct, EXP)


def relu(ctx: CkksContext, ct: Ciphertext, bound: float = 1.0) -> Ciphertext:
    """ReLU on [-bound, bound]: degree 31, max abs error 9.7e-3 * bound (worst near 0).

    Levels: 6 for bound == 1, otherwise 7.
    """
    return evaluate_chebyshev(ctx, ct, RELU.coeffs * bound, -bound, bound)


def inverse(
    ctx: CkksContext, ct: Ciphertext, lo: float = 1.0, hi: float = 64.0, iterations: int = 1
) -> Ciphertext:
    """1/x on [lo, hi]: degree-31 Chebyshev start, then Newton y <- y (2 - x y).

    On [1, 64]: the start has max relative error 2.9e-3 (worst at x = 64, where 1/x is small);
    Newton squares the relative error, so one iteration gives 8.4e-6 in float64 (measured);
    CKKS noise (~1e-4 absolute) then dominates. Levels: chebyshev_depth(31, lo, hi) + 2 per
    iteration = 9 on [1, 64] with one iteration (one PARAMS_16384 refresh window).
    """
    start = fit_chebyshev("inverse", lambda x: 1.0 / x, lo, hi, 31)
    y = evaluate(ctx, ct, start)
    for _ in range(iterations):
        xy = ctx.multiply(ct, y)
        y = ctx.multiply(y, ctx.add_plain(ctx.negate(xy), 2.0))
    return y


def inverse_sqrt(
    ctx: CkksContext,
    ct: Ciphertext,
    lo: float = 1.0,
    hi: float = 64.0,
    iterations: int = 1,
    degree: int = 15,
) -> Ciphertext:
    """1/sqrt(x) on [lo, hi] (LayerNorm / RMSNorm): Chebyshev start + Newton y (1.5 - x y^2 / 2).

    Max relative error in float64 (measured on a geometric grid of the range):
    [1, 64], degree 15: start 7.9e-3, 1 iteration 9.4e-5 (9 levels: one PARAMS_16384 window).
    [1/64, 16], degree 31: start 7.5e-2, 1 iteration 8.7e-3, 2 iterations 1.1e-4
    (7 + 3 + 3 levels: callers refresh between the start and the iterations, as HeOps does).
    Levels: chebyshev_depth(degree, lo, hi) + 3 per iteration.
    """
    y = evaluate(ctx, ct, fit_chebyshev("inverse_sqrt", _rsqrt, lo, hi, degree))
    half_x = ctx.multiply_scalar_to(ct, 0.5, ctx.scale)  # x has levels to spare here
    for _ in range(iterations):
        y = inverse_sqrt_step(ctx, half_x, y)
    return y


def _rsqrt(x: np.ndarray) -> np.ndarray:
    return 1.0 / np.sqrt(x)


def inverse_sqrt_step(ctx: CkksContext, half_x: Ciphertext, y: Ciphertext) -> Ciphertext:
    """One Newton step for 1/sqrt(x), given x / 2: squares the relative error; 3 levels."""
    xy2 = ctx.multiply(ctx.multiply(half_x, y), y)
    return ctx.multiply(y, ctx.add_plain(ctx.negate(xy2), 1.5))
