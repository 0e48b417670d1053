"""Linear layers between the model owner (party 0: plaintext weights) and the client (party 1):
the `LinearBackend` interface and `OtLinear`, the reference backend built from correlated OTs
(semi-honest; computational security of IKNP and the base OT, 128-bit; exact mod 2^64, no
statistical error).

`LinearBackend.matmul(party, x, weight, out_features)` returns this party's shares of
x @ encode(weight) at 2 f fraction bits, not truncated; party 0 passes the float weight
[in, out], party 1 None. The weight never leaves party 0 except masked as below (OtLinear) or
inside HE computations on the client's ciphertexts (he_linear.HeLinear).

OtLinear, per call with x of shape [rows, in]:
- offline (input-independent; it needs the weight, never the client's input): the client draws
  a uniform R [rows, in] and the two parties get additive shares S0 + S1 = R @ W by Gilboa's
  OT multiplication. Two ways, the cheaper one is picked from the shapes (`cost_bytes`):
  "share_bits": one random OT per bit of R (party 0 sends): R's bits are the random choice bits
  themselves (no derandomisation); the owner answers bit j of R[r, i] with the vector
  G(k1) - G(k0) - W[i, :] 2^0 (out words, of which only the low 64 - j bits matter: 5.5 bytes
  per word on average), G the fixed-key-AES TCCR expansion of a 128-bit OT key.
  "weight_bits": one OT per bit of W (party 1 sends, the owner's bits choose after a
  derandomisation bit), the client answers with G(k1) - G(k0) - R[:, i] (rows words).
  Bytes: share_bits 64 rows in (16 + 5.5 out), weight_bits 64 in out (16.125 + 5.5 rows):
  share_bits wins when rows < out (every decode step and prefill of these models).
  What each party sees: the owner sees OT extension messages and, with "weight_bits", c xor b
  for uniform c; the client sees corrections masked by G(k) of keys it does not hold (uniform
  under the TCCR assumption). Nothing depends on W beyond its shape.
- online: the client sends D = x1 - R (uniform: R is a one-time pad), the owner computes
  (x0 + D) @ W + S0 and the client keeps S1: one flight, 8 rows in bytes, exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from privinfer.net.peer import PeerError
from privinfer.twopc.aes import fixed_key_permute, tccr_hash_permuted
from privinfer.twopc.ring import encode

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

_SHIFTS = np.arange(64, dtype=np.uint64)
_TIERS = ((0, 32, np.uint64), (32, 48, np.uint32), (48, 64, np.uint16))
_TIER_BYTES = sum((hi - lo) * np.dtype(t).itemsize for lo, hi, t in _TIERS)  # 352 per 64 words
CHUNK_WORDS = 1 << 21  # words of one (elements, 64, width) correction block (bounds memory)


class LinearBackend(Protocol):
    name: str

    def matmul(
        self, party: TwoParty, x: np.ndarray, weight: np.ndarray | None, out_features: int
    ) -> np.ndarray: ...


def cost_bytes(rows: int, in_features: int, out_features: int, method: str) -> float:
    """Offline bytes (both directions) of one OtLinear product by `method`."""
    if method == "share_bits":
        return 64 * rows * in_features * (16 + out_features * _TIER_BYTES / 64)
    return 64 * in_features * out_features * (16.125 + rows * _TIER_BYTES / 64)


def _tweaks(party: TwoParty, n: int, width: int) -> int:
    """A fresh tweak range for expanding n keys to `width` words (same at both parties)."""
    return party.ot.pad_tweaks.take_start(n * ((width + 1) // 2))


def _expand(keys: np.ndarray, width: int, start: int) -> np.ndarray:
    """(n, 16) uint8 OT keys -> (n, width) uint64 words: TCCR hashes of each key under the
    fresh tweaks from `start` on (the two keys of an OT and the receiver's share a range)."""
    n, blocks = keys.shape[0], (width + 1) // 2
    px = np.repeat(fixed_key_permute(keys), blocks, axis=0)
    tweaks = np.arange(n * blocks, dtype=np.uint64) + np.uint64(start)
    out = np.ascontiguousarray(tccr_hash_permuted(px, tweaks)).view(np.uint64)
    return out.reshape(n, 2 * blocks)[:, :width]


def _pack(w: np.ndarray) -> bytes:
    """(n, 64, width) corrections, bit j keeping only its low 64 - j bits (352 bytes / 64)."""
    return b"".join(np.ascontiguousarray(w[:, lo:hi].astype(t)).tobytes() for lo, hi, t in _TIERS)


def _unpack(payload: bytes, n: int, width: int, party: TwoParty) -> np.ndarray:
    if len(payload) != n * width * _TIER_BYTES:
        raise PeerError(party.peer, "linear correction payload has the wrong length")
    out = np.empty((n, 64, width), np.uint64)
    pos = 0
    for lo, hi, t in _TIERS:
        size = n * (hi - lo) * width * np.dtype(t).itemsize
        out[:, lo:hi] = np.frombuffer(payload[pos : pos + size], t).reshape(n, hi - lo, width)
        pos += size
    return out


def _shifted_sum(v: np.ndarray) -> np.ndarray:
    """sum_j v[:, j, :] 2^j over axis 1 (mod 2^64)."""
    return (v << _SHIFTS[None, :, None]).sum(axis=1, dtype=np.uint64)


def _chunk(elements: int, width: int) -> int:
    return max(1, min(elements, CHUNK_WORDS // (64 * max(width, 1))))


def _offline_share_bits(party: TwoParty, dims: tuple[int, int, int, int], w: np.ndarray | None):
    """(R or None, share of R @ W), batch-wise, with R's bits as party 1's random OT choices."""
    batch, rows, n_in, n_out = dims
    n = batch * rows * n_in  # element (b, r, i), flat in row-major order
    party.ot.reserve(64 * n, 0)
    acc = np.zeros((n, n_out), np.uint64)
    r = np.zeros(n, np.uint64) if party.pid == 1 else None
    step = _chunk(n, n_out)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        k = hi - lo
        t0 = _tweaks(party, 64 * k, n_out)
        if party.pid == 0:
            assert w is not None
            m0, m1 = party.ot.take_send(64 * k)
            g0 = _expand(m0, n_out, t0).reshape(k, 64, n_out)
            g1 = _expand(m1, n_out, t0).reshape(k, 64, n_out)
            e = np.arange(lo, hi)
            rows_w = w.reshape(-1, n_out)[e // (rows * n_in) * n_in + e % n_in]  # W[b, i, :]
            party.send_only(_pack(g1 - g0 - rows_w[:, None, :]))
            acc[lo:hi] = np.zeros((k, n_out), np.uint64) - _shifted_sum(g0)
        else:
            assert r is not None
            c, mc = party.ot.take_recv(64 * k)
            corr = _unpack(party.exchange(b""), k, n_out, party)
            bits = c.reshape(k, 64).astype(np.uint64)
            r[lo:hi] = (bits << _SHIFTS).sum(axis=1, dtype=np.uint64)
            gc = _expand(mc, n_out, t0).reshape(k, 64, n_out)
            acc[lo:hi] = _shifted_sum(gc - bits[:, :, None] * corr)
    share = acc.reshape(batch, rows, n_in, n_out).sum(axis=2, dtype=np.uint64)
    return (None if r is None else r.reshape(batch, rows, n_in)), share


def _offline_weight_bits(party: TwoParty, dims: tuple[int, int, int, int], w: np.ndarray | None):
    """(R or None, share of R @ W), batch-wise, with W's bits choosing in OTs party 1 sends."""
    batch, rows, n_in, n_out = dims
    n = batch * n_in * n_out  # element (b, i, o), flat in row-major order
    party.ot.reserve(0, 64 * n)
    r = None
    if party.pid == 1:
        r = party.private_random_u64(batch * rows * n_in).reshape(batch, rows, n_in)
    acc = np.zeros((n, rows), np.uint64)
    step = _chunk(n, rows)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        k = hi - lo
        t0 = _tweaks(party, 64 * k, rows)
        if party.pid == 0:
            assert w is not None
            c, mc = party.ot.take_recv(64 * k)
            bits = ((w.reshape(-1)[lo:hi, None] >> _SHIFTS) & np.uint64(1)).astype(np.uint8)
            party.send_only(np.packbits(bits.reshape(-1) ^ c, bitorder="little"))
            corr = _unpack(party.exchange(b""), k, rows, party)
            gc = _expand(mc, rows, t0).reshape(k, 64, rows)
            b = bits.astype(np.uint64)[:, :, None]
            acc[lo:hi] = _shifted_sum(gc - b * corr)
        else:
            assert r is not None
            m0, m1 = party.ot.take_send(64 * k)
            got = party.exchange(b"")
            if len(got) != (64 * k + 7) // 8:
                raise PeerError(party.peer, "linear choice payload has the wrong length")
            d = np.unpackbits(np.frombuffer(got, np.uint8), bitorder="little")[: 64 * k]
            flip = d.astype(bool)[:, None]
            k0, k1 = np.where(flip, m1, m0), np.where(flip, m0, m1)
            g0 = _expand(k0, rows, t0).reshape(k, 64, rows)
            g1 = _expand(k1, rows, t0).reshape(k, 64, rows)
            cols = r.transpose(0, 2, 1).reshape(-1, rows)[np.arange(lo, hi) // n_out]  # R[b, :, i]
            party.send_only(_pack(g1 - g0 - cols[:, None, :]))
            acc[lo:hi] = np.zeros((k, rows), np.uint64) - _shifted_sum(g0)
    share = acc.reshape(batch, n_in, n_out, rows).sum(axis=1, dtype=np.uint64)
    return r, np.ascontiguousarray(share.transpose(0, 2, 1))


def owner_matmul(
    party: TwoParty, x: np.ndarray, w: np.ndarray | None, out_features: int, method: str = "auto"
) -> np.ndarray:
    """Shares of x @ w mod 2^64 for shared x [rows, in] (or a batch [B, rows, in]) and party 0's
    ring matrix w [in, out] (or [B, in, out]); party 1 passes None. `method`: "share_bits",
    "weight_bits" or "auto" (fewer bytes). Party 0's w may be any private ring matrix, e.g.
    its own share of an activation (MpcHeOps' attention uses it for the cross terms)."""
    x = np.asarray(x, np.uint64)
    single = x.ndim == 2
    xb = x[None] if single else x
    batch, rows, n_in = xb.shape
    if method == "auto":
        cheaper = cost_bytes(rows, n_in, out_features, "share_bits") <= cost_bytes(
            rows, n_in, out_features, "weight_bits"
        )
        method = "share_bits" if cheaper else "weight_bits"
    wb = None
    if party.pid == 0:
        if w is None or w.shape[-2:] != (n_in, out_features) or w.ndim != x.ndim:
            raise ValueError("the owner must pass a weight of shape [in_features, out_features]")
        wb = np.asarray(w, np.uint64)[None] if single else np.asarray(w, np.uint64)
    offline = _offline_share_bits if method == "share_bits" else _offline_weight_bits
    with party.offline_phase():
        r, s = offline(party, (batch, rows, n_in, out_features), wb)
    if party.pid == 1:
        assert r is not None
        party.send_only(xb - r)
        return s[0] if single else s
    assert wb is not None
    d = party.exchange(b"")
    if len(d) != 8 * batch * rows * n_in:
        raise PeerError(party.peer, "linear input payload has the wrong length")
    masked = xb + np.frombuffer(d, np.uint64).reshape(batch, rows, n_in)
    out = np.matmul(masked, wb) + s
    return out[0] if single else out


class OtLinear:
    """The reference `LinearBackend`: the owner's weights times the shared input by correlated
    OTs (Gilboa), exact mod 2^64. Offline bytes grow with rows x in x out (see the module
    docstring); the online phase is one flight of 8 rows in bytes."""

    name = "ot"

    def __init__(self, method: str = "auto") -> None:
        if method not in ("auto", "share_bits", "weight_bits"):
            raise ValueError("method must be auto, share_bits or weight_bits")
        self.method = method

    def matmul(
        self, party: TwoParty, x: np.ndarray, weight: np.ndarray | None, out_features: int
    ) -> np.ndarray:
        with party.op("linear"):
            w = None if weight is None else encode(np.asarray(weight, np.float64), party.f)
            return owner_matmul(party, x, w, out_features, self.method)


# The backend both parties use (the server's manifest names it and the client checks it). At
# merge, HeLinear registers here ("he": "privinfer.twopc.he_linear:HeLinear") and becomes the
# default; everything else (engine, session, mode, CLI) takes it from `make_backend`.
# "he": BFV coefficient encoding (twopc.he_linear), the default: 10-50x fewer bytes than OT
# products on the model shapes (docs/mpc-he.md); "ot": the exact OT reference.
BACKENDS: dict[str, str] = {
    "he": "privinfer.twopc.he_linear:HeLinear",
    "ot": "privinfer.twopc.linear:OtLinear",
}
DEFAULT_BACKEND = "he"


def make_backend(name: str = DEFAULT_BACKEND) -> LinearBackend:
    """A fresh linear backend by its registered name."""
    import importlib

    if name not in BACKENDS:
        raise ValueError(f"unknown linear backend {name!r}: use one of {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
