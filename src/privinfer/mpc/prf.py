"""Correlated randomness from pairwise AES-CTR keys (no dealer); secure if AES is a PRF and
each pairwise key is known only to its two parties.

Party i holds `key_prev` (shared with party i-1) and `key_next` (shared with party i+1); with
three parties, keys[k] belongs to the pair {k, k+1}. A `RandomStream` turns one key into ring
words; the two holders of a key must draw from it in the same order (every protocol here draws
symmetrically), and then read the same words. Two streams implement it, on disjoint counter
blocks of the same key: `KeyStream` (a fresh 64-bit counter as the upper half of the CTR nonce
per draw; `mpc.store` derives weight-share components with it) and `BufferedKeyStream` (one
continuous stream read through a buffer; what compute parties draw from). `PairwiseRandomness`
is a party's provider: it is given its two streams and derives the correlated values from them.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def _check_key(key: bytes) -> None:
    if len(key) not in (16, 32):
        raise ValueError("PRF keys must be 16 or 32 bytes (AES-128 or AES-256)")


class RandomStream(Protocol):
    """Uniform int64 ring words from one pairwise key, the same at both holders of the key."""

    def draw(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Fresh uniform int64 tensor of `shape`."""
        ...

    def draw_words(self, n: int) -> np.ndarray:
        """`draw((n,))` as a flat uint64 numpy array (the same words)."""
        ...


_DRAW_CHUNK = 1 << 22  # bytes of key stream produced per update in a big draw


class KeyStream:
    """Deterministic stream of pseudo-random ring tensors from one AES-128/256 key: each draw
    runs a fresh cipher on its own counter value."""

    def __init__(self, key: bytes) -> None:
        _check_key(key)
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
        if n <= _DRAW_CHUNK // 8:
            raw = enc.update(bytes(8 * n)) + enc.finalize()
            return torch.from_numpy(np.frombuffer(raw, dtype=np.int64).copy()).reshape(shape)
        # a big draw (a weight component): encrypted in place, chunk by chunk, into the result
        # (the same key stream as one update; no full-size temporaries)
        out = torch.empty(n + 2, dtype=torch.int64)  # CTR's update_into wants 15 spare bytes
        buf = memoryview(out.numpy().view(np.uint8))
        zeros = bytes(_DRAW_CHUNK)
        for off in range(0, 8 * n, _DRAW_CHUNK):
            size = min(_DRAW_CHUNK, 8 * n - off)
            enc.update_into(zeros[:size] if size < _DRAW_CHUNK else zeros, buf[off:])
        enc.finalize()
        return out[:n].reshape(shape)

    def draw_words(self, n: int) -> np.ndarray:
        """`draw((n,))` as a flat uint64 numpy array (the same words)."""
        return self.draw((n,)).numpy().view(np.uint64)


class BufferedKeyStream:
    """One continuous AES-CTR stream read through a buffer. A fresh cipher per draw costs
    ~16 us, a few times per round per party; a draw from the buffer costs ~3 us. Counter blocks
    start at (2^64 - 16) * 2^64, disjoint from `KeyStream`'s blocks for the same key."""

    CHUNK_BYTES = 1 << 18

    def __init__(self, key: bytes, chunk_bytes: int = CHUNK_BYTES) -> None:
        _check_key(key)
        nonce = ((1 << 64) - 16).to_bytes(8, "big") + bytes(8)
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        self._arr = np.zeros(0, dtype=np.int64)
        self._off = 0
        self._left = 0
        self._chunk = chunk_bytes

    def __repr__(self) -> str:  # never print the key
        return "BufferedKeyStream()"

    def draw(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Fresh uniform int64 tensor of `shape` (a view of the stream's buffer: every draw
        gets its own, never reused, words)."""
        n = math.prod(shape)
        if n > self._left:
            rest = self._arr[self._off :]
            if 8 * n > self._chunk:  # a big draw (a weight share): its own torch-owned tensor
                raw = self._enc.update(bytes(8 * (n - rest.size)))
                out = torch.empty(n, dtype=torch.int64)
                out.numpy()[: rest.size] = rest
                out.numpy()[rest.size :] = np.frombuffer(raw, dtype=np.int64)
                self._arr, self._off, self._left = np.zeros(0, dtype=np.int64), 0, 0
                return out.view(shape)
            raw = self._enc.update(bytes(8 * max(self._chunk // 8, n - rest.size)))
            fresh = np.frombuffer(raw, dtype=np.int64)
            self._arr = np.concatenate((rest, fresh)) if rest.size else fresh.copy()
            self._off, self._left = 0, self._arr.size
        off = self._off
        self._off, self._left = off + n, self._left - n
        return torch.from_numpy(self._arr[off : off + n].reshape(shape))

    def draw_words(self, n: int) -> np.ndarray:
        """The next `n` words as a flat uint64 numpy array: the same words `draw((n,))` returns
        (for protocol code that computes on numpy views)."""
        if n > self._left:
            return self.draw((n,)).numpy().view(np.uint64)
        off = self._off
        self._off, self._left = off + n, self._left - n
        return self._arr[off : off + n].view(np.uint64)


class PairwiseRandomness:
    """A party's two key streams (`prev` shared with party i-1, `next` with party i+1) and the
    correlated values derived from them."""

    def __init__(self, prev: RandomStream, next: RandomStream) -> None:
        self.prev = prev
        self.next = next

    @classmethod
    def buffered(
        cls, key_prev: bytes, key_next: bytes, chunk_bytes: int = BufferedKeyStream.CHUNK_BYTES
    ) -> PairwiseRandomness:
        """The provider a compute party runs on: `BufferedKeyStream`s over its two keys."""
        return cls(
            BufferedKeyStream(key_prev, chunk_bytes), BufferedKeyStream(key_next, chunk_bytes)
        )

    def child(self, chunk_bytes: int = BufferedKeyStream.CHUNK_BYTES) -> PairwiseRandomness:
        """A fresh buffered provider for a sub-protocol, keyed by one draw from each stream (the
        same draws at both holders of each key, so the child's keys pair up like these)."""
        key_prev = self.prev.draw((2,)).numpy().tobytes()
        key_next = self.next.draw((2,)).numpy().tobytes()
        return PairwiseRandomness.buffered(key_prev, key_next, chunk_bytes)

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
