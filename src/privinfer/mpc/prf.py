"""Correlated randomness from pairwise AES-CTR keys (no dealer); secure if AES is a PRF and
each pairwise key is known only to its two parties.

Party i holds `key_prev` (shared with party i-1) and `key_next` (shared with party i+1); with
three parties, keys[k] belongs to the pair {k, k+1}. Each draw on a key uses a fresh 64-bit
counter as the upper half of the CTR nonce, so draws never overlap. The two holders of a key must
draw from it in the same order; every protocol here draws symmetrically.
"""

from __future__ import annotations

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class KeyStream:
    """Deterministic stream of pseudo-random ring tensors from one AES-128/256 key."""

    def __init__(self, key: bytes) -> None:
        if len(key) not in (16, 32):
            raise ValueError("PRF keys must be 16 or 32 bytes (AES-128 or AES-256)")
        self._key = key
        self._counter = 0

    def __repr__(self) -> str:  # never print the key
        return f"KeyStream(draws={self._counter})"

    def draw(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Fresh uniform int64 tensor of `shape` (one counter step, any size)."""
        n = int(np.prod(shape)) if len(shape) else 1
        nonce = self._counter.to_bytes(8, "big") + bytes(8)
        self._counter += 1
        enc = Cipher(algorithms.AES(self._key), modes.CTR(nonce)).encryptor()
        raw = enc.update(bytes(8 * n)) + enc.finalize()
        return torch.from_numpy(np.frombuffer(raw, dtype=np.int64).copy()).reshape(shape)

    def draw_words(self, n: int) -> np.ndarray:
        """`draw((n,))` as a flat uint64 numpy array (the same words)."""
        return self.draw((n,)).numpy().view(np.uint64)


class PairwiseRandomness:
    """A party's two key streams and the correlated values derived from them."""

    def __init__(self, key_prev: bytes, key_next: bytes) -> None:
        self.prev = KeyStream(key_prev)
        self.next = KeyStream(key_next)

    def zero_share(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """This party's part of a 3-out-of-3 additive sharing of zero."""
        return self.next.draw(shape) - self.prev.draw(shape)

    def zero_share_xor(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """This party's part of a 3-out-of-3 XOR sharing of zero (64 bits per word)."""
        return self.next.draw(shape) ^ self.prev.draw(shape)

    def random_replicated(
        self, shape: tuple[int, ...] | torch.Size
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replicated shares (r_i, r_{i+1}) of a uniform r nobody knows, with no communication."""
        return self.prev.draw(shape), self.next.draw(shape)
