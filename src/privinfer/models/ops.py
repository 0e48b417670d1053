"""The `Ops` protocol: the operations a transformer needs, implemented by every engine.

Model code (llama.py, bert.py) is written once against this interface and never knows which
engine runs it. Design rules, for the private engines' sake:
- Operations are coarse (`attention`, `rms_norm`, `swiglu`, `linears`), so an MPC engine can
  batch a whole step into few rounds and an HE engine can plan depth.
- Weights enter once through `prepare` and are held as engine-native handles (torch tensors,
  replicated shares, pre-encoded CKKS plaintexts); the model never touches raw weights again.
- Token ids given to `embed` are the client's private input; indices given to `embed_public`,
  positions and shapes are public, so engines may use cheap public arithmetic for them.
- The KV cache lives in the engine's representation (`new_cache` / `cache_append`).
- `next_token` is the only place a value leaves the engine during generation, and it goes to
  the client; `reveal` hands a tensor to the output owner (e.g. an embedding to the client).
- `costs()` reports wall seconds, rounds, bytes and refreshes by op class.

Activations are 2-D, [tokens, features], for a single sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import torch

from privinfer.models.costs import CostReport

T = TypeVar("T")  # the engine's tensor type
WeightKind = Literal["linear", "embedding", "norm", "bias"]


@dataclass(frozen=True)
class Sampler:
    """How to pick the next token: greedy when temperature == 0."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class Ops(Protocol[T]):  # type: ignore[misc]
    name: str

    def prepare(self, name: str, weight: torch.Tensor, *, kind: WeightKind) -> Any:
        """Turn a float weight into the engine's own form, once, at load time."""
        ...

    def embed(self, table: Any, ids: Sequence[int]) -> T:
        """Rows of `table` for the client's private token ids -> [len(ids), dim]."""
        ...

    def embed_public(self, table: Any, indices: Sequence[int]) -> T:
        """Rows of `table` at public indices (positions, segment ids)."""
        ...

    def linear(self, x: T, w: Any, b: Any | None = None) -> T:
        """x @ w.T (+ b); w is [out, in]."""
        ...

    def linears(self, x: T, ws: Sequence[tuple[Any, Any | None]]) -> list[T]:
        """Several linear maps of the same input (e.g. q, k, v), batched by the engine."""
        ...

    def add(self, a: T, b: T) -> T: ...

    def rms_norm(self, x: T, w: Any, eps: float) -> T: ...

    def layer_norm(self, x: T, w: Any, b: Any, eps: float) -> T: ...

    def swiglu(self, gate: T, up: T) -> T:
        """silu(gate) * up."""
        ...

    def gelu(self, x: T) -> T: ...

    def rope(
        self, x: T, positions: Sequence[int], *, n_heads: int, head_dim: int, theta: float
    ) -> T:
        """Rotary embedding (rotate-half layout) at public positions, per head."""
        ...

    def attention(
        self,
        q: T,
        k: T,
        v: T,
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        causal: bool,
        q_offset: int,
    ) -> T:
        """softmax(q k^T / sqrt(d) [+ causal mask]) v for all heads; q is [t, n_heads*d], k/v are
        [s, n_kv_heads*d]; query row i sits at absolute position q_offset + i."""
        ...

    def new_cache(self, n_layers: int) -> Any: ...

    def cache_append(self, cache: Any, layer: int, k: T, v: T) -> tuple[T, T]:
        """Append this step's k, v rows for `layer`; return all rows so far."""
        ...

    def last_row(self, x: T) -> T: ...

    def next_token(self, logits: T, sampler: Sampler, step: int) -> int:
        """Choose the next token from [1, vocab] logits; only the chosen id reaches the client."""
        ...

    def mean_pool(self, x: T, *, normalize: bool) -> T:
        """Mean over tokens, optionally L2-normalised -> [1, dim]."""
        ...

    def reveal(self, x: T) -> torch.Tensor:
        """Hand `x` to the output owner (the client) as a float tensor."""
        ...

    def costs(self) -> CostReport: ...
