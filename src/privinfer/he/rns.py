"""Integer polynomials in RNS form with NumPy: uniform masks, centred CRT lifts, window checks.

Security assumption: none beyond the caller's; masks come from the OS CSPRNG
(`secrets.token_bytes`) and nothing here logs or keeps a value. Used by the refresh protocol
(`he.refresh`) so that no coefficient goes through a Python integer: a polynomial is its
residues, shape (k, N) uint64, modulo the primes of one CKKS level.

Exactness: every product is an exact modular product by a constant (`mulmod`, Shoup's method:
the quotient comes from the high 64 bits of a * floor(b 2^64 / q), computed in 32-bit halves,
and is off by at most one), for primes below 2^61.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from privinfer.errors import InputError

_MAX_PRIME = 1 << 61
_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def _mulhi(a: np.ndarray, b: int) -> np.ndarray:
    """High 64 bits of the 128-bit products a * b (a uint64 array, b < 2^64)."""
    a0, a1 = a & _LOW, a >> _32
    b0, b1 = np.uint64(b & 0xFFFFFFFF), np.uint64(b >> 32)
    lo, mid1, mid2 = a0 * b0, a1 * b0, a0 * b1
    carry = ((lo >> _32) + (mid1 & _LOW) + (mid2 & _LOW)) >> _32
    return a1 * b1 + (mid1 >> _32) + (mid2 >> _32) + carry


def mulmod(a: np.ndarray, b: int, q: int) -> np.ndarray:
    """(a * b) mod q, elementwise and exact, for a uint64 array, a constant 0 <= b < q and a
    prime q < 2^61 (Shoup: the estimated quotient is floor(a b / q) or one less)."""
    if not 1 < q < _MAX_PRIME or not 0 <= b < q:
        raise InputError("RNS products need primes below 2^61 and reduced constants.")
    a = np.asarray(a, np.uint64)
    shoup = (b << 64) // q
    with np.errstate(over="ignore"):
        r = a * np.uint64(b) - _mulhi(a, shoup) * np.uint64(q)  # in [0, 2q), wrapping
    return np.where(r >= np.uint64(q), r - np.uint64(q), r)


def uniform_rns(bits: int, n: int, primes: Sequence[int]) -> np.ndarray:
    """Residues (len(primes), n) of n integers uniform in [-2^bits, 2^bits) (OS CSPRNG)."""
    limbs = -(-(bits + 1) // 32)
    raw = np.frombuffer(secrets.token_bytes(4 * limbs * n), np.uint32).reshape(limbs, n)
    raw = raw.astype(np.uint64)
    top_bits = bits + 1 - 32 * (limbs - 1)
    raw[-1] &= np.uint64((1 << top_bits) - 1)  # U uniform in [0, 2^(bits+1))
    out = np.empty((len(primes), n), np.uint64)
    for j, q in enumerate(primes):
        acc = np.zeros(n, np.uint64)
        for i in range(limbs):
            term = mulmod(raw[i] % np.uint64(q), pow(2, 32 * i, q), q)
            acc = (acc + term) % np.uint64(q)
        out[j] = (acc + np.uint64(q - pow(2, bits, q))) % np.uint64(q)  # U - 2^bits
    return out


def from_int64(coeffs: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """Residues of an int64 polynomial (e.g. a rounded Gaussian)."""
    c = np.asarray(coeffs, np.int64)
    return np.stack([(c % np.int64(q)).astype(np.uint64) for q in primes])


def from_objects(coeffs: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """Residues of a polynomial of Python integers (slow path: tests and small inputs)."""
    return np.stack([(np.asarray(coeffs, dtype=object) % q).astype(np.uint64) for q in primes])


def negate(res: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """Residues of -x."""
    qs = np.asarray(primes, np.uint64)[:, None]
    return (qs - res) % qs


class CentredLift:
    """The centred integers (in (-Q/2, Q/2]) whose residues modulo `primes` are `res`, held
    as mixed-radix digits (Garner): y = t0 + q0 (t1 + q1 (t2 + ...)), minus Q when y > Q/2."""

    def __init__(self, res: np.ndarray, primes: Sequence[int]) -> None:
        self.primes = [int(q) for q in primes]
        digits: list[np.ndarray] = []
        for j, q in enumerate(self.primes):
            t = res[j] % np.uint64(q)
            for i, d in enumerate(digits):  # t = (t - d_i) / q_i mod q_j
                diff = (t + np.uint64(q) - d % np.uint64(q)) % np.uint64(q)
                t = mulmod(diff, pow(self.primes[i], -1, q), q)
            digits.append(t)
        self.digits = digits
        big_q = 1
        for q in self.primes:
            big_q *= q
        self.modulus = big_q
        self.negative = self._greater_than(big_q // 2)

    def _greater_than(self, value: int) -> np.ndarray:
        """y > value (y as the non-negative mixed-radix integer), elementwise and exact."""
        radix, rest = [], value
        for q in self.primes:
            radix.append(rest % q)
            rest //= q
        n = self.digits[0].size
        gt, eq = np.zeros(n, bool), np.ones(n, bool)
        for d, h in zip(reversed(self.digits), reversed(radix), strict=True):
            gt |= eq & (d > np.uint64(h))
            eq &= d == np.uint64(h)
        return gt

    def residues(self, primes: Sequence[int]) -> np.ndarray:
        """Residues of the centred integers modulo other primes (each below 2^61)."""
        out = np.empty((len(primes), self.digits[0].size), np.uint64)
        for j, p in enumerate(primes):
            acc = self.digits[-1] % np.uint64(p)
            for d, q in zip(reversed(self.digits[:-1]), reversed(self.primes[:-1]), strict=True):
                acc = (mulmod(acc, q % p, p) + d % np.uint64(p)) % np.uint64(p)
            shift = np.uint64(self.modulus % p)
            out[j] = np.where(self.negative, (acc + np.uint64(p) - shift) % np.uint64(p), acc)
        return out

    def magnitude_at_least(self, bound: int) -> bool:
        """True when some |y_j| >= bound (exact: near the bound, those coefficients are
        checked with Python integers)."""
        approx = np.zeros(self.digits[0].size)
        for d, q in zip(reversed(self.digits), reversed(self.primes), strict=True):
            approx = approx * float(q) + d.astype(np.float64)
        approx = np.where(self.negative, approx - float(self.modulus), approx)
        # float64 error here is below Q 2^-49 in absolute terms; look closer at a wider band
        near = np.abs(approx) >= float(bound) - float(self.modulus) * 2.0**-45
        if not near.any():
            return False
        return any(abs(v) >= bound for v in self.to_objects(np.flatnonzero(near)))

    def to_objects(self, index: np.ndarray | None = None) -> np.ndarray:
        """The centred integers as Python ints (object array; slow, for tests and checks)."""
        sel = slice(None) if index is None else index
        vals = np.zeros(self.digits[0][sel].size, dtype=object)
        for d, q in zip(reversed(self.digits), reversed(self.primes), strict=True):
            vals = vals * q + d[sel].astype(object)
        return np.where(self.negative[sel], vals - self.modulus, vals)
