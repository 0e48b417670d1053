"""HeOps' decoder operations: RoPE at public positions, an encrypted KV cache, next-token logits.

Security assumption: server side only. Positions, the context capacity (the packing's token
count) and the number of generated tokens are public. Rows sit at their absolute positions in
one fixed token-minor packing, so appending to the cache is a masked addition. The next token is
chosen by the client from logits the server sends it encrypted: the client learns the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privinfer.errors import InputError
from privinfer.models.ops import Sampler


@dataclass
class HeCache:
    """Per-layer K and V (rows [0, length) valid) in the fixed decoder packing."""

    k: list[Any] = field(default_factory=list)
    v: list[Any] = field(default_factory=list)


class DecoderMixin:
    """Mixed into HeOps."""

    def _init_decoder(self) -> None:
        self._cache_len = 0

    def _next_start(self, rows: int) -> int:
        start = self._cache_len if self.context_tokens else 0
        if self.context_tokens and start + rows > self.context_tokens:
            raise InputError(
                f"{start + rows} tokens exceed the HE context of {self.context_tokens} tokens."
            )
        return start

    def new_cache(self, n_layers: int) -> HeCache:
        if not self.context_tokens:
            raise InputError("HE decoding needs HeOps(context_tokens=...) (a power of two).")
        self._cache_len = 0
        return HeCache([None] * n_layers, [None] * n_layers)

    def _masked_rows(self, x: Any) -> list:
        """x's ciphertexts with every row outside [start, start + rows) set to zero (1 level)."""
        cts = self._ready(x.cts, 1)
        return [self.ctx.multiply_values(ct, self._valid(x, c)) for c, ct in enumerate(cts)]

    def cache_append(self, cache: HeCache, layer: int, k: Any, v: Any) -> tuple[Any, Any]:
        with self._op("cache"):
            out = []
            for store, x in ((cache.k, k), (cache.v, v)):
                new = self._masked_rows(x)
                old = store[layer]
                if old is not None:
                    if old.start + old.rows != x.start:
                        raise InputError("KV cache rows must be appended in order.")
                    both = self._ready(old.cts + new, 2)
                    n = len(new)
                    new = [self.ctx.add(a, b) for a, b in zip(both[:n], both[n:], strict=True)]
                total = type(x)(new, x.start + x.rows, x.cols, x.tokens, 0)
                store[layer] = total
                out.append(total)
            if layer == 0:
                self._cache_len = k.start + k.rows
            return out[0], out[1]

    def rope(
        self, x: Any, positions: Sequence[int], *, n_heads: int, head_dim: int, theta: float
    ) -> Any:
        """x cos + rotate_half(x) sin, per head, at public positions (2 levels)."""
        with self._op("rope"):
            x = self._enc(x)
            pos = np.asarray(list(positions), dtype=np.float64)
            if pos.size != x.rows:
                raise InputError("RoPE needs one position per row.")
            inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
            ang = np.outer(pos, inv)
            ang = np.concatenate([ang, ang], axis=1)
            cos = np.zeros((x.tokens, x.cols))
            sin = np.zeros((x.tokens, x.cols))
            cos[x.start : x.start + x.rows] = np.tile(np.cos(ang), (1, n_heads))
            sin[x.start : x.start + x.rows] = np.tile(np.sin(ang), (1, n_heads))
            half = head_dim // 2
            rot = np.zeros((x.cols, x.cols))  # rotate_half: [-x2, x1] per head
            for h in range(n_heads):
                o = h * head_dim
                rot[o : o + half, o + half : o + head_dim] = -np.eye(half)
                rot[o + half : o + head_dim, o : o + half] = np.eye(half)
            xr = self._matmul(x, rot)
            cts = self._ready(x.cts + xr.cts, 1)
            n = len(x.cts)
            cs, ss = self._pack(cos, x.tokens), self._pack(sin, x.tokens)
            a = [self.ctx.multiply_values(c, w) for c, w in zip(cts[:n], cs, strict=True)]
            b = [self.ctx.multiply_values(c, w) for c, w in zip(cts[n:], ss, strict=True)]
            out = [self.ctx.add(p, q) for p, q in zip(a, b, strict=True)]
            return type(x)(out, x.rows, x.cols, x.tokens, x.start)

    def last_row(self, x: Any) -> Any:
        x = self._enc(x)
        return type(x)(x.cts, 1, x.cols, x.tokens, x.start + x.rows - 1)

    def next_token(self, logits: Any, sampler: Sampler, step: int) -> int:
        """The server sends encrypted logits; the client decrypts and picks (its own sampler)."""
        with self._op("next_token"):
            tok = self._deliver(self._enc(logits), "choose")
            return int(tok) if tok is not None else -1
