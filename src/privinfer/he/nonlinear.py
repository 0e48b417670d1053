"""Refresh-aware nonlinear steps for HeOps: norms, activations, softmax, with range checks.

Security assumption: the server evaluates public polynomials on ciphertexts; every range, degree
and iteration count is public (from a public calibration, see `he.calibrate`); refreshes reveal
only sigma=40-masked values to the client (`he.refresh`). Range checks add one revealed scalar per
inference (see `CheckAccumulator`), stated in docs/he.md.

Approximations (float64 errors measured by `plan_*` on 20,001-point geometric grids, cached):
* 1/sqrt(x) on [lo, hi] (norm variances): Chebyshev start (degree 7/15/31) + Newton steps
  y <- y (3 - x y^2) / 2, with refreshes in between; the plan picks the fewest levels reaching
  relative error <= 1e-5 (e.g. [0.2, 260]: degree 31 + 3 steps, 4e-7).
* 1/x on [lo, hi] (softmax sums): Chebyshev start + Newton y <- y (2 - x y), same rule; the
  intermediate normalisations of the softmax need only 1e-2 relative (a per-row factor that
  the last, 1e-5, normalisation removes; the next range keeps a 10% margin): e.g. on
  [e^-2 / 1.1, 1.1 e^2] degree 31 alone (3.3e-3) instead of 31 + 2 Newton steps (1.2e-10).
* Softmax by normalised squaring: p = exp(s / 2^k) on [-2, 2] (degree 11, abs. error 4.9e-9),
  then k times p <- p^2 / mean(p^2). Every sum it divides by lies in a range fixed by
  construction ([e^-2, e^2] first, then [1, n]); the only calibrated bound is |s| <= 2^(k+1).
* GELU / SiLU on a calibrated [lo, hi]: the smallest degree of a ladder (GELU 31..127 by 8/16,
  SiLU 31, 63, 127) with abs. error <= 1e-5 (GELU) or 1e-3 * max(1, half-width / 8) (SiLU);
  see `plan_activation`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from privinfer.errors import InputError
from privinfer.he import poly
from privinfer.he.ckks import Ciphertext, CkksContext

REL_TARGET = 1e-5


def _grid_rel_error(fn, approx: poly.Approximation, lo: float, hi: float, newton) -> list[float]:
    x = np.geomspace(lo, hi, 20001)
    y, out = approx(x), []
    for _ in range(5):
        out.append(float(np.abs(y / fn(x) - 1).max()))
        y = newton(x, y)
    return out


@functools.lru_cache(maxsize=256)
def plan_rsqrt(lo: float, hi: float) -> tuple[poly.Approximation, int, float]:
    """(start, Newton steps, float64 relative error) for 1/sqrt on [lo, hi]; fewest levels."""
    return _plan(lo, hi, lambda x: 1 / np.sqrt(x), lambda x, y: y * (1.5 - 0.5 * x * y * y), 3)


@functools.lru_cache(maxsize=256)
def plan_inverse(
    lo: float, hi: float, target: float = REL_TARGET
) -> tuple[poly.Approximation, int, float]:
    """(start, Newton steps, float64 relative error) for 1/x on [lo, hi]; fewest levels
    reaching relative error `target` (softmax's intermediate normalisations use 1e-2)."""
    return _plan(lo, hi, lambda x: 1 / x, lambda x, y: y * (2 - x * y), 2, target)


def _plan(lo, hi, fn, newton, step_levels, target=REL_TARGET):
    best = None
    for degree in (7, 15, 31):
        start = poly.fit_chebyshev("start", fn, lo, hi, degree)
        errs = _grid_rel_error(fn, start, lo, hi, newton)
        for steps, err in enumerate(errs):
            if err <= target:
                levels = poly.chebyshev_depth(degree, lo, hi) + steps * step_levels
                if best is None or levels < best[0]:
                    best = (levels, start, steps, err)
                break
    if best is None:
        raise InputError(
            f"No 1/x or 1/sqrt plan reaches 1e-5 on [{lo:g}, {hi:g}]: the model's calibrated "
            "normalisation range is too wide for HE mode in this version."
        )
    return best[1], best[2], best[3]


# Between powers of two a degree costs its Paterson-Stockmeyer products, not a level: MiniLM's
# widest GELU range needs 111 (8e-6) rather than 127, its second 95 rather than 127.
GELU_DEGREES = (31, 39, 47, 63, 79, 95, 111, 127)


@functools.lru_cache(maxsize=64)
def plan_activation(name: str, lo: float, hi: float) -> poly.Approximation:
    """GELU or SiLU fit on [lo, hi]: the smallest listed degree meeting the target (GELU:
    31, 39, ..., 127 in steps of 8 or 16; SiLU: 31, 63, 127).

    GELU (encoders): 1e-5 absolute. A float64 emulation of HE MiniLM (exact arithmetic, these
    polynomials) on the 20 held-out sentences showed GELU's fit was the whole of HE's
    similarity error: at the former 1e-3 x half-width/8 it gave 3.3e-4 and 12 swapped pair
    comparisons (HE measured 3.4e-4, 13); at 1e-4, 4.5e-6 and none (plaintext gaps go down to
    9.8e-6); at 1e-5, 7.5e-7. SiLU (decoders) keeps 1e-3 x max(1, half-width / 8): greedy
    tokens need less, and each degree step costs a level on 3 x 1536 columns per layer."""
    fn = {"gelu": poly._gelu, "silu": poly._silu}[name]
    target = 1e-5 if name == "gelu" else 1e-3 * max(1.0, (hi - lo) / 16)
    ladder = GELU_DEGREES if name == "gelu" else (31, 63, 127)
    for degree in ladder:
        approx = poly.fit_chebyshev(name, fn, lo, hi, degree)
        if approx.max_abs_error <= target:
            break
    return approx


EXP_HALF = poly.fit_chebyshev("exp", np.exp, -2.0, 2.0, 11)  # abs. error 4.9e-9 on [-2, 2]


def squarings_for(score_bound: float) -> int:
    """k such that |s| / 2^k <= 2 for |s| <= score_bound."""
    return max(0, math.ceil(math.log2(max(score_bound, 1e-9) / 2.0)))


class CheckAccumulator:
    """Range checks, summed into one ciphertext the client decrypts with the output.

    Two kinds: a Newton residual sum((x y^2 - 1)^2) / count (about 1e-9 inside the range, O(1)
    when x left it) and a Chebyshev overflow mean(T_m(u)^2) with m = 2^floor(log2 degree)
    (at most 1 inside the range; T_32(1.1)^2 = 5e11). The client checks total <= overflow count
    + 0.5. What leaks: one scalar per inference, a function of activations (stated in docs).
    """

    def __init__(self, ctx: CkksContext) -> None:
        self.ctx = ctx
        self.terms: list[Ciphertext] = []
        self.overflow_checks = 0

    def add(self, ct: Ciphertext, weights: np.ndarray, overflow: bool) -> None:
        """Add sum over slots of ct * weights (weights: public per-slot, 1/count on valid slots)."""
        if self.ctx.level(ct) <= self.ctx.params.floor_level:
            return  # no level left to weight it: skipped (never happens with HeOps' refreshes)
        ctx = self.ctx
        level = ctx.level(ct)
        pt = ctx.encode(weights, level, ctx.scale * float(ctx.primes(level)[-1]) / ct.scale)
        out = ctx.multiply_plain(ct, pt)
        out.scale = ctx.scale  # equal up to double rounding: all terms share one exact scale
        self.terms.append(out)
        self.overflow_checks += int(overflow)

    def reset(self) -> None:
        self.terms, self.overflow_checks = [], 0


def chebyshev_with_check(
    ctx: CkksContext, ct: Ciphertext, approx: poly.Approximation
) -> tuple[Ciphertext, Ciphertext]:
    """Evaluate `approx` and return (value, T_m(u)^2) for the overflow check (one more level)."""
    coeffs = np.asarray(approx.coeffs, dtype=np.float64)
    basis = poly._ChebyshevBasis(ctx, poly._normalise(ctx, ct, approx.lo, approx.hi))
    out = poly.chebyshev_sum(ctx, basis, coeffs)
    m = 1 << (len(coeffs) - 1).bit_length() - 1
    tm = basis.get(m)
    return out, ctx.multiply(tm, tm)
