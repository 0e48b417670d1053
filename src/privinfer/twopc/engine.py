"""`MpcHeOps`: the model `Ops` interface on 2-out-of-2 shares between the model owner (party 0,
weights in plaintext, never sent) and the client (party 1, owns the token ids and receives the
outputs). Semi-honest 2PC, no third party, no dealer; computational security of the OTs (and of
the HE scheme where the linear backend is `HeLinear`).

Each party runs the same model definition with its own `MpcHeOps(party, backend)`; tensors are
numpy uint64 share matrices [rows, features] at `party.f` fraction bits. The client's
definition is built on shape-only (meta) tensors: `prepare` reads values at party 0 only.
- linear maps: the `LinearBackend` (owner's weight times the shared input), truncation, then
  party 0 adds its bias to its share.
- embedding of private ids: `embedding="lookup"` (default with OtLinear) is a 1-out-of-vocab
  OT per token (`lookup.ot_lookup`: the server sends every row masked, the client can unmask
  only its own; vocab x dim x 8 bytes per token); `embedding="linear"` (default with other
  backends) makes the client's one-hot rows [tokens, vocab] its own share (party 0's is zero)
  and sends the owner's table through the linear backend (one [tokens, vocab] x [vocab, dim]
  product). Either way the server learns nothing of the ids and the table stays with it.
- norms (owner's gains), softmax, SiLU, GELU (tanh form, <= 4.7e-4 from erf-GELU), attention
  (q k^T and p v: local products of each party's own shares plus the two cross terms as OT
  products, `linear.owner_matmul`; public RoPE tables and causal masks), argmax: twopc's
  protocols, each with the range and error stated in its module.
- KV cache: per layer the party's share of K and V (client one share, server the other).
- `next_token` (greedy, or Gumbel-max sampling on the server's noise scaled by the client's
  shared temperature) and `reveal` open values to the client only; party 0 gets nothing.
What each party learns: shapes (prompt length, number of generated tokens, model shape) and
timing; every message it receives is masked by OT pads, Beaver masks or uniform shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from privinfer.errors import InputError
from privinfer.models.costs import CostReport
from privinfer.models.ops import Sampler, WeightKind
from privinfer.twopc import activations, softmax
from privinfer.twopc.arith import mul
from privinfer.twopc.linear import LinearBackend, OtLinear, make_backend, owner_matmul
from privinfer.twopc.lookup import ot_lookup
from privinfer.twopc.norms import layer_norm, rms_norm
from privinfer.twopc.ring import decode, encode, reveal_to, share_input
from privinfer.twopc.runtime import TwoParty
from privinfer.twopc.trunc import trunc

OWNER, CLIENT = 0, 1
ROPE_BITS = 20
MASK_VALUE = -1.0e4  # a causally masked score (softmax accepts any value below the row max)


@dataclass
class OwnerWeight:
    """A weight handle: its public shape and, at party 0 only, the float64 values (linear
    weights transposed to [in, out])."""

    kind: str
    shape: tuple[int, ...]
    value: np.ndarray | None


class MpcHeOps:
    """`Ops` on additive 2-out-of-2 shares for one of the two parties."""

    name = "mpc+he"

    def __init__(
        self, party: TwoParty, backend: LinearBackend | None = None, embedding: str = "auto"
    ) -> None:
        self.party = party
        self.backend: LinearBackend = backend if backend is not None else make_backend()
        if embedding == "auto":  # OT products cost 44x more than the lookup on MiniLM
            embedding = "lookup" if self.backend.name == OtLinear.name else "linear"
        if embedding not in ("lookup", "linear"):
            raise ValueError("embedding must be auto, lookup or linear")
        self.embedding = embedding
        self._tables: dict[int, np.ndarray] = {}
        self._temperature: np.ndarray | None = None  # the client's T, shared once per session
        self._concat: dict[tuple[int, ...], OwnerWeight] = {}
        self._rope: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def owner(self) -> bool:
        return self.party.pid == OWNER

    def _public(self, value: np.ndarray) -> np.ndarray:
        """A share of a public or owner-held ring value: party 0 holds it, party 1 zero."""
        v = np.asarray(value, np.uint64)
        return v.copy() if self.owner else np.zeros_like(v)

    # weights and inputs
    def prepare(self, name: str, weight: torch.Tensor, *, kind: WeightKind) -> OwnerWeight:
        shape = tuple(int(s) for s in weight.shape)
        if kind == "linear":
            shape = shape[::-1]
        if not self.owner:
            return OwnerWeight(kind, shape, None)  # the client never reads a weight's values
        w = weight.detach().to(torch.float64).numpy()
        return OwnerWeight(kind, shape, w.T if kind == "linear" else w)

    def embed(self, table: OwnerWeight, ids: Sequence[int]) -> np.ndarray:
        vocab, dim = table.shape
        if not self.owner:
            idx = np.asarray(list(ids), np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= vocab):
                raise InputError(f"token ids must lie in [0, {vocab})")
        if self.embedding == "lookup":
            ring_table = None
            if self.owner:
                assert table.value is not None
                if id(table) not in self._tables:
                    self._tables[id(table)] = encode(table.value, self.party.f)
                ring_table = self._tables[id(table)]
            with self.party.op("embed"):
                return ot_lookup(
                    self.party, ring_table, None if self.owner else idx, len(ids), vocab, dim
                )
        if self.owner:
            x = np.zeros((len(ids), vocab), np.uint64)
        else:
            x = np.zeros((len(ids), vocab), np.uint64)
            x[np.arange(len(ids)), idx] = np.uint64(1 << self.party.f)
        with self.party.op("embed"):
            return self._matmul(x, table)

    def embed_public(self, table: OwnerWeight, indices: Sequence[int]) -> np.ndarray:
        if self.owner:
            assert table.value is not None
            return encode(table.value[list(indices)], self.party.f)
        return np.zeros((len(list(indices)), table.shape[1]), np.uint64)

    # linear algebra
    def _matmul(self, x: np.ndarray, w: OwnerWeight) -> np.ndarray:
        raw = self.backend.matmul(self.party, x, w.value, w.shape[1])
        return trunc(self.party, raw, self.party.f)

    def _add_bias(self, y: np.ndarray, b: OwnerWeight | None) -> np.ndarray:
        if b is None or not self.owner:
            return y
        assert b.value is not None
        return y + encode(b.value, self.party.f)

    def linear(self, x: np.ndarray, w: OwnerWeight, b: OwnerWeight | None = None) -> np.ndarray:
        with self.party.op("linear"):
            return self._add_bias(self._matmul(x, w), b)

    def linears(
        self, x: np.ndarray, ws: Sequence[tuple[OwnerWeight, OwnerWeight | None]]
    ) -> list[np.ndarray]:
        """One product against the column-concatenated weights (cached per weight tuple)."""
        key = tuple(id(w) for w, _ in ws)
        if key not in self._concat:
            n_in = ws[0][0].shape[0]
            n_out = sum(w.shape[1] for w, _ in ws)
            value = None
            if self.owner:
                value = np.concatenate([w.value for w, _ in ws], axis=1)  # type: ignore[misc]
            self._concat[key] = OwnerWeight("linear", (n_in, n_out), value)
        with self.party.op("linear"):
            y = self._matmul(x, self._concat[key])
            outs, start = [], 0
            for w, b in ws:
                outs.append(self._add_bias(y[:, start : start + w.shape[1]], b))
                start += w.shape[1]
            return outs

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    # norms and activations
    def _gain(self, w: OwnerWeight | None) -> np.ndarray | None:
        return None if w is None or w.value is None else encode(w.value, self.party.f)

    def rms_norm(self, x: np.ndarray, w: OwnerWeight, eps: float) -> np.ndarray:
        return rms_norm(self.party, x, self._gain(w), OWNER, eps)

    def layer_norm(self, x: np.ndarray, w: OwnerWeight, b: OwnerWeight, eps: float) -> np.ndarray:
        return layer_norm(self.party, x, self._gain(w), self._gain(b), OWNER, eps)

    def swiglu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        with self.party.op("swiglu"):
            return mul(self.party, activations.silu(self.party, gate), up)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        return activations.gelu(self.party, x)

    # attention
    def _rope_tables(
        self, positions: tuple[int, ...], head_dim: int, theta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        key = (positions, head_dim, theta)
        if key not in self._rope:
            inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
            ang = np.outer(np.asarray(positions, np.float64), inv)
            ang = np.concatenate([ang, ang], axis=-1)[:, None, :]
            self._rope = {key: (encode(np.cos(ang), ROPE_BITS), encode(np.sin(ang), ROPE_BITS))}
        return self._rope[key]

    def rope(
        self, x: np.ndarray, positions: Sequence[int], *, n_heads: int, head_dim: int, theta: float
    ) -> np.ndarray:
        """Rotate-half RoPE with public cos/sin at 20 bits (local products, one truncation)."""
        cos, sin = self._rope_tables(tuple(positions), head_dim, theta)
        t, half = x.shape[0], head_dim // 2
        h = x.reshape(t, n_heads, head_dim)
        rot = np.concatenate([np.zeros_like(h[..., half:]) - h[..., half:], h[..., :half]], -1)
        with self.party.op("rope"):
            y = trunc(self.party, h * cos + rot * sin, ROPE_BITS)
        return y.reshape(t, n_heads * head_dim)

    def _product(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Shares of a @ b (batched, untruncated) for shared a [B, m, k] and b [B, k, n]: each
        party multiplies its own shares locally; the cross terms a1 b0 and (b1^T a0^T)^T are
        OT products of the client's share with the server's (`linear.owner_matmul`, the
        server's share in the weight's place): ~4x fewer bytes than elementwise Beaver."""
        p = self.party
        local = np.matmul(a, b)
        mine_a = a if not self.owner else np.zeros_like(a)
        mine_bt = b.transpose(0, 2, 1) if not self.owner else np.zeros_like(b.transpose(0, 2, 1))
        own_b = b if self.owner else None
        own_at = a.transpose(0, 2, 1) if self.owner else None
        c1 = owner_matmul(p, mine_a, own_b, b.shape[2])  # a1 @ b0
        c2 = owner_matmul(p, np.ascontiguousarray(mine_bt), own_at, a.shape[1])  # b1^T @ a0^T
        return local + c1 + c2.transpose(0, 2, 1)

    def attention(
        self,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        causal: bool,
        q_offset: int,
    ) -> np.ndarray:
        """softmax(q k^T / sqrt(d) + mask) v per head; the query heads of one KV head are
        stacked as rows (GQA), so each product runs once per KV head."""
        p, f = self.party, self.party.f
        t, s = q.shape[0], k.shape[0]
        rep, d = n_heads // n_kv_heads, head_dim
        with p.op("attention"):
            # query head h = g rep + j attends with KV head g (torch's enable_gqa order)
            qg = q.reshape(t, n_kv_heads, rep, d).transpose(1, 2, 0, 3).reshape(n_kv_heads, -1, d)
            kh = np.ascontiguousarray(k.reshape(s, n_kv_heads, d).transpose(1, 0, 2))
            vh = np.ascontiguousarray(v.reshape(s, n_kv_heads, d).transpose(1, 0, 2))
            log_d = math.log2(d)
            if log_d == int(log_d) and int(log_d) % 2 == 0:  # 1/sqrt(d) = 2^-(log_d / 2)
                extra = int(log_d) // 2
            else:
                qg = trunc(p, qg * encode(1.0 / math.sqrt(d), f), f)
                extra = 0
            raw = self._product(
                np.ascontiguousarray(qg), np.ascontiguousarray(kh.transpose(0, 2, 1))
            )
            scores = trunc(p, raw, f + extra).reshape(n_heads, t, s)
            if causal:
                masked = np.arange(s)[None, :] > (np.arange(t)[:, None] + q_offset)
                fill = self._public(np.full(scores.shape, encode(MASK_VALUE, f)))
                scores = np.where(masked[None], fill, scores)
            probs = softmax.softmax(p, scores.reshape(n_heads * t, s))
            out = trunc(p, self._product(probs.reshape(n_kv_heads, rep * t, s), vh), f)
            out = out.reshape(n_kv_heads, rep, t, d).transpose(2, 0, 1, 3)
            return np.ascontiguousarray(out).reshape(t, n_heads * d)

    # cache and outputs
    def new_cache(self, n_layers: int) -> list[list[np.ndarray | None]]:
        return [[None, None] for _ in range(n_layers)]

    def cache_append(
        self, cache: list[list[np.ndarray | None]], layer: int, k: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        old_k, old_v = cache[layer]
        if old_k is not None and old_v is not None:
            k, v = np.concatenate([old_k, k]), np.concatenate([old_v, v])
        cache[layer] = [k, v]
        return k, v

    def last_row(self, x: np.ndarray) -> np.ndarray:
        return x[-1:]

    def split_rows(self, x: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
        return np.split(x, np.cumsum(list(sizes))[:-1])

    def cat_rows(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(list(xs))

    def next_token(self, logits: np.ndarray, sampler: Sampler, step: int) -> int:
        """Greedy argmax in 2PC, or for temperature T > 0 the Gumbel-max trick: argmax(logits +
        T g) is a sample of softmax(logits / T). The server draws g (it never sees the logits
        or the chosen index); the client shares T once per session (the server learns only
        that sampling is on) and T g comes from one OT product of the client's share of T with
        the server's g. The index is opened to the client only (party 0 gets -1). top_p < 1
        is refused (it would need a private sort of the vocabulary)."""
        if sampler.top_p < 1.0:
            raise InputError("mode mpc+he does not support --top-p below 1")
        row = logits[-1:]
        if not sampler.greedy:
            with self.party.op("sampling_noise"):
                row = row + self._scaled_noise(sampler.temperature, row.shape[1])
        with self.party.op("argmax"):
            idx = softmax.argmax(self.party, row)
            got = reveal_to(self.party, idx, CLIENT)
        return -1 if got is None else int(got[0])

    def _scaled_noise(self, temperature: float, vocab: int) -> np.ndarray:
        """Shares of T g at f bits: g standard Gumbel from the server's CSPRNG, u in (0, 1) with
        53 random bits (|g| < 37), T <= T_MAX (the client's, shared once)."""
        p, f = self.party, self.party.f
        if self._temperature is None:
            mine = None if self.owner else encode(np.array([temperature]), f)
            self._temperature = share_input(p, CLIENT, mine, 1)
        g = None
        if self.owner:
            u = (p.private_random_u64(vocab) >> np.uint64(11)).astype(np.float64) + 0.5
            g = encode(-np.log(-np.log(u / 2.0**53)), f)[None, :]
        tg = owner_matmul(p, self._temperature.reshape(1, 1), g, vocab)
        return trunc(p, tg, f)

    def mean_pool(self, x: np.ndarray, *, normalize: bool) -> np.ndarray:
        p, f = self.party, self.party.f
        with p.op("mean_pool"):
            total = x.sum(axis=0, keepdims=True, dtype=np.uint64)
            m = trunc(p, total * encode(1.0 / x.shape[0], f), f)
            if not normalize:
                return m
            dim = m.shape[-1]
            gain = encode(np.full(dim, 1.0 / math.sqrt(dim)), f) if self.owner else None
            return rms_norm(p, m, gain, OWNER, 1e-12)

    def reveal(self, x: np.ndarray) -> torch.Tensor:
        """Open `x` to the client (party 0 gets an empty tensor)."""
        got = reveal_to(self.party, x, CLIENT)
        return torch.empty(0) if got is None else torch.from_numpy(decode(got, self.party.f))

    def costs(self) -> CostReport:
        return self.party.meter.snapshot()


def placeholder_weights(shapes: dict[str, Sequence[int]]) -> dict[str, Any]:
    """Shape-only (meta) tensors for the client's copy of the model definition."""
    return {k: torch.empty(tuple(v), device="meta") for k, v in shapes.items()}
