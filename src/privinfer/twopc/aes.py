"""AES-128 as the PRG (CTR mode) and as a fixed-key tweakable hash (ECB), from `cryptography`.

Security assumption: AES-128 is a pseudorandom permutation (PRG: CTR keystream under a secret
16-byte seed, one fresh nonce per stream) and, for the hash, the fixed-key permutation pi is
modelled as in Guo, Katz, Wang, Yu (S&P 2020, "Efficient and Secure Multiparty Computation from
Fixed-Key Block Ciphers", section 7.4): H(x, i) = pi(pi(x) xor i) xor pi(x) is tweakable
circular correlation robust (TCCR), the property IKNP needs to turn Delta-correlated OT rows
into random OT messages, and the 1-out-of-N OT needs to derive many pads from one key. The
fixed key below is public; security rests on the ideal-permutation model of AES, 128-bit.
Tweaks must never repeat within a session: callers draw them from `TweakCounter`.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

FIXED_KEY = bytes.fromhex("61c0ffee5eed0ddba11deadbeef17ca7")  # public, arbitrary
_ECB = Cipher(algorithms.AES(FIXED_KEY), modes.ECB())
BLOCK = 16


def prg(seed: bytes, nonce: int, n_bytes: int) -> np.ndarray:
    """`n_bytes` pseudorandom bytes (uint8) from AES-128-CTR keyed by `seed`, IV = `nonce`."""
    enc = Cipher(algorithms.AES(seed), modes.CTR(nonce.to_bytes(16, "big"))).encryptor()
    return np.frombuffer(enc.update(bytes(n_bytes)), dtype=np.uint8)


def fixed_key_permute(blocks: np.ndarray) -> np.ndarray:
    """pi(x) on every 16-byte row of a (n, 16) uint8 array (AES-ECB under the public key)."""
    out = _ECB.encryptor().update(np.ascontiguousarray(blocks, dtype=np.uint8).tobytes())
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, BLOCK)


def tccr_hash(blocks: np.ndarray, tweaks: np.ndarray) -> np.ndarray:
    """H(x_i, t_i) = pi(pi(x_i) xor t_i) xor pi(x_i) for (n, 16) uint8 blocks and (n,) uint64
    tweaks (placed in the low 8 bytes); returns (n, 16) uint8."""
    px = fixed_key_permute(blocks)
    return tccr_hash_permuted(px, tweaks)


def tccr_hash_permuted(px: np.ndarray, tweaks: np.ndarray) -> np.ndarray:
    """`tccr_hash` given pi(x) already (saves one AES call when a key is hashed under many
    tweaks, as in the 1-out-of-N OT)."""
    t = px.copy()
    t.view(np.uint64)[:, 0] ^= np.asarray(tweaks, dtype=np.uint64).reshape(-1)
    return fixed_key_permute(t) ^ px


class TweakCounter:
    """Hands out fresh, non-overlapping tweak ranges; both parties draw in the same order."""

    def __init__(self, start: int = 1) -> None:
        self.next = start

    def take(self, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.uint64) + np.uint64(self.take_start(n))

    def take_start(self, n: int) -> int:
        """Reserve n tweaks and return the first (callers compute them lazily)."""
        start = self.next
        self.next += n
        return start
