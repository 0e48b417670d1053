"""The plain engine: `Ops` on float32 torch tensors. The reference, and what runs in the enclave.

No privacy by itself: whoever runs it sees everything. Costs report wall seconds per op class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from privinfer.models.costs import CostReport
from privinfer.models.ops import Sampler, WeightKind


class _KVCache:
    """Per-layer K and V buffers with doubling capacity; rows [0, length) are valid."""

    def __init__(self, n_layers: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = [0] * n_layers

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = self.length[layer], k.shape[0]
        buf_k, buf_v = self.k[layer], self.v[layer]
        if buf_k is None or n + t > buf_k.shape[0]:
            cap = max(64, 2 * (n + t))
            new_k = k.new_empty((cap, k.shape[1]))
            new_v = v.new_empty((cap, v.shape[1]))
            if buf_k is not None and buf_v is not None:
                new_k[:n] = buf_k[:n]
                new_v[:n] = buf_v[:n]
            buf_k, buf_v = new_k, new_v
            self.k[layer], self.v[layer] = buf_k, buf_v
        buf_k[n : n + t] = k
        buf_v[n : n + t] = v
        self.length[layer] = n + t
        return buf_k[: n + t], buf_v[: n + t]

    def copy(self) -> _KVCache:
        """An independent cache holding the same rows (appends to either never reach the other)."""
        out = _KVCache(len(self.k))
        for i, (k, v, n) in enumerate(zip(self.k, self.v, self.length, strict=True)):
            if k is not None and v is not None:
                out.append(i, k[:n], v[:n])
        return out


class PlainOps:
    """Float32 torch implementation of `Ops`."""

    name = "plain"

    def __init__(self, *, timed: bool = False) -> None:
        self._costs = CostReport()
        self._timed = timed
        self._rope_cache: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}
        self._gen: torch.Generator | None = None

    # weights and inputs
    def prepare(self, name: str, weight: torch.Tensor, *, kind: WeightKind) -> torch.Tensor:
        return weight.detach().to(torch.float32).contiguous()

    def embed(self, table: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
        return F.embedding(torch.as_tensor(list(ids), dtype=torch.long), table)

    def embed_public(self, table: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        return self.embed(table, indices)

    # linear algebra
    def linear(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.linear(x, w, b)

    def linears(
        self, x: torch.Tensor, ws: Sequence[tuple[torch.Tensor, torch.Tensor | None]]
    ) -> list[torch.Tensor]:
        return [F.linear(x, w, b) for w, b in ws]

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    # norms and activations
    def rms_norm(self, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), w, eps)

    def layer_norm(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float
    ) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    def swiglu(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return F.silu(gate) * up

    def gelu(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)

    # attention
    def _rope_tables(
        self, head_dim: int, theta: float, upto: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (head_dim, theta)
        cached = self._rope_cache.get(key)
        if cached is None or cached[0].shape[0] < upto:
            n = max(upto, 2 * cached[0].shape[0] if cached else 256)
            inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
            ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)
            ang = torch.cat([ang, ang], dim=-1)
            cached = (ang.cos().float(), ang.sin().float())
            self._rope_cache[key] = cached
        return cached

    def rope(
        self,
        x: torch.Tensor,
        positions: Sequence[int],
        *,
        n_heads: int,
        head_dim: int,
        theta: float,
    ) -> torch.Tensor:
        pos = list(positions)
        cos_t, sin_t = self._rope_tables(head_dim, theta, max(pos) + 1)
        if pos == list(range(pos[0], pos[0] + len(pos))):
            cos, sin = cos_t[pos[0] : pos[0] + len(pos)], sin_t[pos[0] : pos[0] + len(pos)]
        else:
            idx = torch.as_tensor(pos)
            cos, sin = cos_t[idx], sin_t[idx]
        t = x.shape[0]
        xh = x.view(t, n_heads, head_dim)
        half = head_dim // 2
        rot = torch.cat([-xh[..., half:], xh[..., :half]], dim=-1)
        return (xh * cos[:, None, :] + rot * sin[:, None, :]).reshape(t, n_heads * head_dim)

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        causal: bool,
        q_offset: int,
    ) -> torch.Tensor:
        t, s = q.shape[0], k.shape[0]
        if t == 1:  # a decode step: two small matmuls per KV head, no mask, no GQA expansion
            qg = q.view(n_kv_heads, n_heads // n_kv_heads, head_dim)
            kh = k.view(s, n_kv_heads, head_dim).permute(1, 2, 0)
            vh = v.view(s, n_kv_heads, head_dim).transpose(0, 1)
            p = torch.softmax(torch.bmm(qg, kh) * (1.0 / math.sqrt(head_dim)), dim=-1)
            return torch.bmm(p, vh).reshape(1, n_heads * head_dim)
        qh = q.view(t, n_heads, head_dim).transpose(0, 1)
        kh = k.view(s, n_kv_heads, head_dim).transpose(0, 1)
        vh = v.view(s, n_kv_heads, head_dim).transpose(0, 1)
        mask = None
        is_causal = False
        if causal and t > 1:
            if q_offset == 0 and t == s:
                is_causal = True
            else:
                rows = torch.arange(t)[:, None] + q_offset
                mask = torch.arange(s)[None, :] <= rows
        out = F.scaled_dot_product_attention(
            qh,
            kh,
            vh,
            attn_mask=mask,
            is_causal=is_causal,
            scale=1.0 / math.sqrt(head_dim),
            enable_gqa=n_heads != n_kv_heads,
        )
        return out.transpose(0, 1).reshape(t, n_heads * head_dim)

    # cache and outputs
    def new_cache(self, n_layers: int) -> _KVCache:
        return _KVCache(n_layers)

    def cache_append(
        self, cache: _KVCache, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return cache.append(layer, k, v)

    def last_row(self, x: torch.Tensor) -> torch.Tensor:
        return x[-1:]

    def copy_cache(self, cache: _KVCache) -> _KVCache:
        """A private copy of `cache` (e.g. of a shared public prefix) that the caller appends to."""
        return cache.copy()

    # batched steps (Llama.forward_batch): consecutive rows per sequence
    def split_rows(self, x: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
        return list(x.split(list(sizes)))

    def cat_rows(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs))

    def next_token(self, logits: torch.Tensor, sampler: Sampler, step: int) -> int:
        return sample_token(logits[-1], sampler, self._generator(sampler, step))

    def _generator(self, sampler: Sampler, step: int) -> torch.Generator | None:
        if sampler.greedy:
            return None
        if step == 0 or self._gen is None:
            self._gen = torch.Generator()
            self._gen.manual_seed(sampler.seed if sampler.seed is not None else torch.seed())
        return self._gen

    def mean_pool(self, x: torch.Tensor, *, normalize: bool) -> torch.Tensor:
        m = x.mean(dim=0, keepdim=True)
        return F.normalize(m, p=2, dim=-1) if normalize else m

    def reveal(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def costs(self) -> CostReport:
        return self._costs


def sample_token(logits: torch.Tensor, sampler: Sampler, gen: torch.Generator | None) -> int:
    """Greedy argmax, or temperature + nucleus (top-p) sampling with `gen` (a float vector in)."""
    if sampler.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.double() / sampler.temperature, dim=-1)
    if sampler.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < sampler.top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))
