"""Base OT: the "Simplest OT" of Chou and Orlandi (Latincrypt 2015) on Curve25519, random-OT
flavour, for the 128 seeds that IKNP extends (semi-honest; computational, CDH on Curve25519 and
SHA-256 as a random oracle, ~128-bit).

Protocol (n OTs in two flights, one sender key for the batch):
  sender:   a random, A = aG                                   -> A
  receiver: b_i random, P_i = b_i G, B_i = P_i (c_i = 0) or A + P_i (c_i = 1)  -> B_1..B_n
  sender:   k0_i = H(i, A, B_i, x(a B_i)), k1_i = H(i, A, B_i, x(a (B_i - A)))
  receiver: k_{c_i} = H(i, A, B_i, x(b_i A))
Scalar multiplications are X25519 from `cryptography` (constant time, clamped scalars); the one
point addition per OT (A + P_i at the receiver, B_i - A at the sender) is affine arithmetic on
the Montgomery curve here, in Python integers, which is not constant time (a timing caveat for
the receiver's P_i; irrelevant to the semi-honest model, stated here for reviewers). Points
travel as 32 bytes: the u-coordinate with the parity of v in bit 255. Any root is fine when a
u-coordinate is lifted to a point: x(k P) = x(-k P), so a sign flip cancels in every key.
H = SHA-256 over a domain tag, the OT index, A, B_i and the shared u-coordinate, cut to 16
bytes. Known caveats: Simplest OT is not UC-secure as first claimed (Hauck-Loss 2017; Genc,
Iovino, Rial 2018) and a malicious sender can make keys depend on A; both are outside the
semi-honest model used here, and hashing A and B_i into every key (as done) is the usual fix
for the key-reuse issue across the batch.
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

P = 2**255 - 19
A_COEF = 486662
_SQRT_M1 = pow(2, (P - 1) // 4, P)
_TAG = b"privinfer/twopc/baseot/v1"
POINT_BYTES = 32


class BaseOTError(ValueError):
    """A base-OT message did not decode to a point of Curve25519."""


def _sqrt(a: int) -> int | None:
    r = pow(a, (P + 3) // 8, P)
    if r * r % P == a % P:
        return r
    r = r * _SQRT_M1 % P
    return r if r * r % P == a % P else None


def _lift(u: int, parity: int | None = None) -> tuple[int, int]:
    """The point (u, v) on v^2 = u^3 + A u^2 + u with v's parity `parity` (any root if None)."""
    if not 0 < u < P:
        raise BaseOTError("point is not on Curve25519")
    v = _sqrt((u * u * u + A_COEF * u * u + u) % P)
    if v is None or v == 0:
        raise BaseOTError("point is not on Curve25519")
    if parity is not None and v & 1 != parity:
        v = P - v
    return u, v


def _add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2:
        raise BaseOTError("degenerate point addition")  # probability ~2^-252 for honest inputs
    lam = (y2 - y1) * pow(x2 - x1, P - 2, P) % P
    x3 = (lam * lam - A_COEF - x1 - x2) % P
    return x3, (lam * (x1 - x3) - y1) % P


def _encode(pt: tuple[int, int]) -> bytes:
    return (pt[0] | ((pt[1] & 1) << 255)).to_bytes(32, "little")


def _decode(b: bytes) -> tuple[int, int]:
    n = int.from_bytes(b, "little")
    return _lift(n & ((1 << 255) - 1), n >> 255)


def _u_bytes(pt: tuple[int, int]) -> bytes:
    return pt[0].to_bytes(32, "little")


def _dh(key: X25519PrivateKey, u: bytes) -> bytes:
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(u))
    except ValueError:
        raise BaseOTError("low-order point in base OT") from None


def _kdf(i: int, a_enc: bytes, b_enc: bytes, shared: bytes) -> bytes:
    return hashlib.sha256(_TAG + i.to_bytes(4, "big") + a_enc + b_enc + shared).digest()[:16]


class BaseOTSender:
    """Sender of a batch of random OTs: `first_message()`, then `keys(receiver's reply)`."""

    def __init__(self) -> None:
        self._a = X25519PrivateKey.generate()
        self._A = _lift(int.from_bytes(self._a.public_key().public_bytes_raw(), "little"))
        self._a_enc = _encode(self._A)

    def first_message(self) -> bytes:
        return self._a_enc

    def keys(self, reply: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(k0, k1), each (n, 16) uint8, from the receiver's n encoded points."""
        if len(reply) != n * POINT_BYTES:
            raise BaseOTError("base-OT reply has the wrong length")
        neg_a = (self._A[0], (P - self._A[1]) % P)
        k0 = np.empty((n, 16), dtype=np.uint8)
        k1 = np.empty((n, 16), dtype=np.uint8)
        for i in range(n):
            b_enc = reply[i * POINT_BYTES : (i + 1) * POINT_BYTES]
            b_pt = _decode(b_enc)
            s0 = _dh(self._a, _u_bytes(b_pt))
            s1 = _dh(self._a, _u_bytes(_add(b_pt, neg_a)))
            k0[i] = np.frombuffer(_kdf(i, self._a_enc, b_enc, s0), dtype=np.uint8)
            k1[i] = np.frombuffer(_kdf(i, self._a_enc, b_enc, s1), dtype=np.uint8)
        return k0, k1


class BaseOTReceiver:
    """Receiver with choice bits `choices` (0/1): `reply(sender's first message)`, then `keys`."""

    def __init__(self, choices: np.ndarray) -> None:
        self.choices = np.asarray(choices, dtype=np.uint8).reshape(-1)
        self._k: np.ndarray | None = None

    def reply(self, first: bytes) -> bytes:
        if len(first) != POINT_BYTES:
            raise BaseOTError("base-OT first message has the wrong length")
        a_pt = _decode(first)
        out = []
        keys = np.empty((len(self.choices), 16), dtype=np.uint8)
        for i, c in enumerate(self.choices):
            b = X25519PrivateKey.generate()
            p_pt = _lift(int.from_bytes(b.public_key().public_bytes_raw(), "little"))
            b_pt = _add(a_pt, p_pt) if c else p_pt
            b_enc = _encode(b_pt)
            out.append(b_enc)
            shared = _dh(b, _u_bytes(a_pt))
            keys[i] = np.frombuffer(_kdf(i, first, b_enc, shared), dtype=np.uint8)
        self._k = keys
        return b"".join(out)

    def keys(self) -> np.ndarray:
        """k_{c_i} for every OT, (n, 16) uint8 (after `reply`)."""
        if self._k is None:
            raise RuntimeError("reply() first")
        return self._k


def random_choice_bits(n: int) -> np.ndarray:
    """n uniformly random bits (uint8 0/1) from the OS CSPRNG."""
    return np.unpackbits(np.frombuffer(secrets.token_bytes((n + 7) // 8), dtype=np.uint8))[:n]
