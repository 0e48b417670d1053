"""Client-aided refresh of CKKS ciphertexts: server masks, client re-encrypts, server unmasks.

Security assumption: semi-honest client and server; statistical security parameter
sigma = 40 (default). Protocol, one round trip for any batch of ciphertexts:

1. Server: mod-switch ct to the refresh level l, then add a fresh public-key encryption of
   zero (re-randomises c1, which otherwise carries the weights) and an integer polynomial R
   with coefficients uniform in [-2^k, 2^k), k = b + sigma + ceil(log2 N), where 2^b bounds
   every coefficient of m + e (b = log2 scale + log2 value_bound + 1, a public bound).
   The bound is on coefficients, which the slot values z_j (N/2 of them) bound through
   |m_k| <= scale (2/N) sum_j |z_j|: value_bound bounds the MEAN |slot| of a refreshed
   ciphertext (a bound on every |z_j| implies it). A few slots far above it, such as
   SmolLM2's massive activations (|x| ~ 2.5e4 in 2-4 slots of position 0), raise the mean
   by a few units and stay well inside it (tests/he/test_refresh.py).
   The client decrypts m + e + R: each coefficient is within statistical distance
   2^(b - k - 1) of uniform, so the whole polynomial within N 2^(b - k - 1) <= 2^(-sigma - 1)
   (union bound): it learns nothing about the data or the noise (R floods e too).
   Needs 2^b + 2^k < q_l / 2, i.e. k + 2 <= log2 q_l: hence PARAMS' wide q0, q1.
2. Client: centred CRT lift of m + e + R (`rns.CentredLift`, NumPy), encrypts it at the top
   level with the secret key (fresh noise) and sends c0 plus the seed of the uniform c1
   (SEAL's seeded serialisation: half the bytes of a full ciphertext).
3. Server: subtracts R at the top level: a top-level encryption of m + e.

Value-bound check (client side, `check_window`). The request carries the public (k, b). With
v = m + e and y = v + R the polynomial the client decrypts, the client accepts a ciphertext
only if every |y_j| < w = 2^k - 2^b, and otherwise raises `SecurityError` (no value in the
message) instead of answering, which stops the session. Properties, per ciphertext:
- in bound (all |v_j| <= 2^b): it aborts with probability <= N 2^(b-k) = 2^-sigma, and an
  accepted y is exactly uniform on (-w, w)^N whatever v is (perfect hiding once accepted);
- an accepted refresh never wrapped modulo q_l (a wrapped y_j has |y_j| >= q_l/2 - 2^k >= 2^k),
  so it is exact: values too large for the mask never come back as silent garbage;
- any v: with excess eps = sum_j max(0, |v_j| - 2^b) / 2^(k+1), it accepts with probability
  <= e^-eps, and an accepted y is within statistical distance ~eps of the ideal uniform view.
  Values exceeding the bound by a factor F give eps <= (F - 1) 2^-(sigma+1): up to F = 2^20
  they stay hidden to 2^-21; gross violations (eps >= 28, e.g. blown-up or wrapped values)
  abort except with probability 2^-40. In between, neither bound is negligible.
Leakage of the check: to the client nothing beyond its view (the test is a function of what
it decrypts anyway); to the server one bit (the session stops at this round), independent of
in-bound values up to 2^-sigma. In an aborting round the client has seen coefficients outside
the window: for those, a lower bound on |v_j| and its sign. Limit: no test on the client's
view can catch a moderate violation with probability above the distance it causes (that would
contradict the hiding); catching every violation while leaking one bit needs a comparison on
the masked values (a homomorphic sign before masking, ~10 levels per refresh, or a two-party
comparison against R), not built here. Moderately out-of-range activations are still caught,
at the end of the session, by the range-check scalar (docs/he.md).

Arithmetic: masks are drawn and kept as residues modulo the top level's primes
(`rns.uniform_rns`, OS CSPRNG, 32-bit limbs reduced with exact Shoup products); no coefficient
goes through a Python integer. Transport-agnostic: the server calls a `RefreshClient` with bytes (a refresh header, then
wire.pack_ciphertexts); `LocalRefreshClient` answers in-process; a network client sends the
same bytes.
"""

from __future__ import annotations

import math
import secrets
import struct
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from privinfer.errors import InputError, SecurityError
from privinfer.he import rns, wire
from privinfer.he.ckks import Ciphertext, CkksContext

DEFAULT_SIGMA = 40
_HEADER = struct.Struct("<5sHH")  # magic, mask bits k, value bits b
_MAGIC = b"PIRF\x01"
OUT_OF_BOUND = (
    "A refresh saw values beyond the bound its mask hides (an HE activation left its "
    "calibrated range); the session was stopped to keep the server's values hidden."
)


def pack_request(mask_bits: int, value_bits: int, ciphertexts: bytes) -> bytes:
    """A refresh request: the public mask and value bit widths, then the ciphertexts."""
    return _HEADER.pack(_MAGIC, mask_bits, value_bits) + ciphertexts


def unpack_request(payload: bytes) -> tuple[int, int, bytes]:
    """(k, b, ciphertext bytes) of a refresh request; refuses anything else."""
    if len(payload) < _HEADER.size or payload[: len(_MAGIC)] != _MAGIC:
        raise InputError("Not a privinfer HE refresh request.")
    _, k, b = _HEADER.unpack_from(payload)
    if not 0 < b < k:
        raise InputError("Malformed HE refresh request.")
    return k, b, payload[_HEADER.size :]


def check_window(coeffs: np.ndarray | rns.CentredLift, mask_bits: int, value_bits: int) -> None:
    """Refuse a masked polynomial with a coefficient outside (-w, w), w = 2^k - 2^b (see the
    module docstring); the error says nothing about the values. `coeffs`: Python integers
    (object array) or a `rns.CentredLift` (checked exactly without them)."""
    w = (1 << mask_bits) - (1 << value_bits)
    if isinstance(coeffs, rns.CentredLift):
        if coeffs.magnitude_at_least(w):
            raise SecurityError(OUT_OF_BOUND)
        return
    if coeffs.size and max(abs(int(c)) for c in (coeffs.max(), coeffs.min())) >= w:
        raise SecurityError(OUT_OF_BOUND)


def uniform_poly(bits: int, n: int) -> np.ndarray:
    """n coefficients uniform in [-2^bits, 2^bits) from the OS CSPRNG (object array; the
    refresh itself draws its masks in RNS form, `rns.uniform_rns`)."""
    return np.array([secrets.randbits(bits + 1) - (1 << bits) for _ in range(n)], dtype=object)


def gaussian_poly(sigma: float, n: int) -> np.ndarray:
    """n coefficients round(sigma * g), g standard normal by Box-Muller on 53-bit uniforms
    from the OS CSPRNG (int64 array). A rounded continuous Gaussian: for sigma >= 4 its
    distance to the discrete Gaussian of the same width is below 2^-60 per coefficient;
    |g| <= sqrt(2 * 53 ln 2) = 8.6, so coefficients stay below 9 sigma."""
    u = np.frombuffer(secrets.token_bytes(16 * n), np.uint64).reshape(2, n) >> np.uint64(11)
    u1 = (u[0].astype(np.float64) + 1.0) / 2.0**53  # (0, 1]: log is finite
    u2 = u[1].astype(np.float64) / 2.0**53
    g = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return np.rint(sigma * g).astype(np.int64)


class RefreshClient(Protocol):
    """The key holder's side of a refresh: masked ciphertexts in, fresh ciphertexts out."""

    def refresh(self, payload: bytes) -> bytes: ...


class LocalRefreshClient:
    """In-process client: decrypts the masked polynomial, re-encrypts it at the top level."""

    def __init__(self, ctx: CkksContext):
        if not ctx.has_secret_key:
            raise SecurityError("A refresh client needs the secret key.")
        self.ctx = ctx
        self.ciphertexts_refreshed = 0

    def refresh(self, payload: bytes) -> bytes:
        ctx = self.ctx
        top = ctx.params.top_level
        k, b, data = unpack_request(payload)
        fresh = []
        for ct in wire.unpack_ciphertexts(ctx, data):
            level = ctx.level(ct)
            if k + 2 > math.floor(ctx.modulus_bits(level)):
                raise InputError("A refresh mask does not fit this ciphertext's level.")
            lift = rns.CentredLift(ctx.decrypt_rns(ct), ctx.primes(level))
            check_window(lift, k, b)  # before anything is re-encrypted
            fresh.append(ctx.encrypt_rns_seeded(lift.residues(ctx.primes(top)), top, ct.scale))
        self.ciphertexts_refreshed += len(fresh)
        return wire.pack_blobs(ctx, fresh)


@dataclass
class RefreshStats:
    """Counted where it happens: round trips, ciphertexts and bytes each way."""

    rounds: int = 0
    ciphertexts: int = 0
    bytes_to_client: int = 0
    bytes_to_server: int = 0


class Refresher:
    """Server side of the refresh protocol (see module docstring)."""

    def __init__(
        self,
        ctx: CkksContext,
        client: RefreshClient,
        value_bound: float = 256.0,
        sigma: int = DEFAULT_SIGMA,
    ):
        self.ctx = ctx
        self.client = client
        self.value_bound = float(value_bound)
        self.sigma = int(sigma)
        self.stats = RefreshStats()
        self.level = self._lowest_safe_level()
        top = ctx.primes(ctx.params.top_level)
        if any(ctx.primes(lv) != top[: len(ctx.primes(lv))] for lv in range(len(top))):
            raise SecurityError("The refresh needs every level's primes to prefix the top's.")

    def value_bits(self, scale: float) -> int:
        """b: 2^b bounds every coefficient of m + e for data at this scale (public)."""
        return math.ceil(math.log2(scale)) + math.ceil(math.log2(max(self.value_bound, 1.0))) + 1

    def mask_bits(self, scale: float) -> int:
        """k: the mask's bit width for data at this scale (see module docstring)."""
        n = self.ctx.params.poly_modulus_degree
        return self.value_bits(scale) + self.sigma + math.ceil(math.log2(n))

    def _lowest_safe_level(self) -> int:
        k = self.mask_bits(self.ctx.scale * 2.0)  # allow scale drift up to 2x Delta
        for level in range(self.ctx.params.top_level):
            if k + 2 <= math.floor(self.ctx.modulus_bits(level)):
                return level
        raise SecurityError(
            f"No CKKS level holds a sigma={self.sigma} refresh mask of {k} bits below the top "
            "level; use parameters with wider low primes or a smaller value bound."
        )

    def needs_refresh(self, ct: Ciphertext, depth: int) -> bool:
        """True when `depth` more levels would take ct below the refresh level."""
        return self.ctx.level(ct) - depth < max(self.level, self.ctx.params.floor_level)

    def _mask(self) -> np.ndarray:
        """A fresh mask's residues modulo the top level's primes (each level's primes are a
        prefix of them, so one draw serves the masking and the unmasking level)."""
        return rns.uniform_rns(
            self.mask_bits(self.ctx.scale * 2.0),
            self.ctx.params.poly_modulus_degree,
            self.ctx.primes(self.ctx.params.top_level),
        )

    def refresh(self, cts: list[Ciphertext]) -> list[Ciphertext]:
        """Refresh a batch in one round trip; outputs are at the top level, same scales."""
        ctx = self.ctx
        if not cts:
            return []
        masked, masks = [], []
        for ct in cts:
            if ct.scale > 2.0 * ctx.scale or ct.scale < 0.5 * ctx.scale:
                raise InputError("Refresh expects ciphertexts at the context's scale (within 2x).")
            if ctx.level(ct) < self.level:
                raise InputError("Ciphertext fell below the refresh level; refresh earlier.")
            ct = ctx.mod_switch_to(ct, self.level)
            mask = self._mask()
            masks.append(mask)
            noise = ctx.encrypt_zero(self.level, ct.scale)
            masked.append(ctx.add_rns_poly(ctx.add(ct, noise), mask))
        drift = ctx.scale * 2.0  # the mask and the bound allow scale drift up to 2x Delta
        payload = pack_request(
            self.mask_bits(drift), self.value_bits(drift), wire.pack_ciphertexts(ctx, masked)
        )
        answer = self.client.refresh(payload)
        fresh = wire.unpack_ciphertexts(ctx, answer)
        if len(fresh) != len(cts):
            raise InputError("Refresh answer holds the wrong number of ciphertexts.")
        self.stats.rounds += 1
        self.stats.ciphertexts += len(cts)
        self.stats.bytes_to_client += len(payload)
        self.stats.bytes_to_server += len(answer)
        top = ctx.params.top_level
        out = []
        for ct, mask, orig in zip(fresh, masks, masked, strict=True):
            if ctx.level(ct) != top or ct.scale != orig.scale:
                raise InputError("Refresh answer is not a top-level ciphertext at the sent scale.")
            out.append(ctx.add_rns_poly(ct, rns.negate(mask, ctx.primes(top))))
        return out
