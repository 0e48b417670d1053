"""`MpcOps`: the model `Ops` interface on replicated secret shares, one instance per compute
party (three parties, semi-honest, honest majority; weights private by default).

Each party runs the same model code with its own `MpcOps(party, client)`; tensors are `RShare`
at the party's fractional bits. Token ids arrive as the client's one-hot shares (the `ids`
argument is only used by the in-process `LocalClient`), which the parties check are consistent
one-hot rows before using them (`protocols.onehot`: one round per input, one more per
session); `next_token` (greedy argmax in MPC) and `reveal` open values to the client only.
Costs are reported per Ops method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from privinfer.errors import InputError
from privinfer.models.costs import CostReport
from privinfer.models.ops import Sampler, WeightKind
from privinfer.mpc.client import ClientPort
from privinfer.mpc.protocols import activations, arith, compare, gumbel, norms, softmax
from privinfer.mpc.protocols.onehot import OneHotCheck
from privinfer.mpc.protocols.trunc import trunc, trunc_mixed
from privinfer.mpc.ring import encode, ring_matmul
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import (
    RShare,
    accept_client_share,
    reveal_to_client_payload,
    share_from,
)

ROPE_BITS = 20


@dataclass
class PublicWeight:
    """A public weight, encoded once: `ring` at `f` fractional bits; `real` (float64) is kept
    only for norm weights and biases, which protocols scale with their own precision."""

    ring: torch.Tensor
    real: torch.Tensor | None
    f: int


Weight = PublicWeight | RShare


def _tensor_key(t: torch.Tensor) -> tuple[int, ...]:
    """Identifies a weight tensor's storage (the tied LM head is the embedding tensor)."""
    return (t.data_ptr(), *t.shape, *t.stride())


def _transposed(w: Weight) -> Weight:
    if isinstance(w, PublicWeight):
        return PublicWeight(w.ring.T, None, w.f)
    return w.map(lambda t: t.T)


class MpcOps:
    """`Ops` over replicated shares for one party."""

    name = "mpc"

    def __init__(
        self,
        party: Party,
        client: ClientPort,
        *,
        private_weights: bool = True,
        weight_owner: int = 0,
    ) -> None:
        self.party = party
        self.client = client
        self.private_weights = private_weights
        self.weight_owner = weight_owner
        self._concat: dict[tuple[int, ...], Weight] = {}
        self._temperature: RShare | None = None  # the client's T, clamped, once per session
        self._prepared: dict[tuple[int, ...], tuple[str, Weight, torch.Tensor]] = {}
        self._rope_pending: RShare | None = None  # a rope output whose truncation is deferred
        self._rope_key: tuple | None = None
        self._rope_cs: tuple[torch.Tensor, torch.Tensor] = (torch.empty(0), torch.empty(0))
        self._input_check = OneHotCheck(party)

    # weights and inputs
    def prepare(self, name: str, weight: torch.Tensor, *, kind: WeightKind) -> Weight:
        """Linear weights are stored transposed ([in, out]); the owner's values are shared, or,
        when a `weight_store` attribute is set (see mpc/store.py), this party's pre-shared
        RShare is loaded from it and `weight` is only a shape placeholder."""
        store = getattr(self, "weight_store", None)
        if store is not None:
            self._concat = store.concat_cache  # the store's weights, concatenated once
            return store.share(self.party.pid, self.party.f, name)
        tied = self._prepared.get(_tensor_key(weight))
        if tied is not None and kind == "linear" and tied[0] == "embedding":
            return _transposed(tied[1])  # tied LM head: the embedding's shares, transposed view
        w = weight.detach().to(torch.float64)
        if kind == "linear":
            w = w.T.contiguous()
        if not self.private_weights:
            real = w if kind in ("norm", "bias") else None
            return PublicWeight(encode(w, self.party.f), real, self.party.f)
        p = self.party
        with p.op("prepare"):
            mine = w if p.pid == self.weight_owner else None
            out = share_from(p, self.weight_owner, mine, tuple(w.shape))
        if kind == "embedding":  # held (with its source) until the first forward step
            self._prepared[_tensor_key(weight)] = (kind, out, weight)
        return out

    def embed(self, table: Weight, ids: Sequence[int]) -> RShare:
        self._prepared.clear()  # weights are prepared: drop the references to float sources
        p = self.party
        vocab = table.ring.shape[0] if isinstance(table, PublicWeight) else table.shape[0]
        onehot = accept_client_share(
            p, self.client.token_input(p.pid, ids, vocab), (len(ids), vocab)
        ).with_f(0)
        with p.op("input_check"):  # raises onehot.InputCheckError for a malicious client
            self._input_check.check(onehot)
        with p.op("embed"):
            if isinstance(table, PublicWeight):
                return RShare(onehot.a @ table.ring, onehot.b @ table.ring, p.pid, table.f)
            return arith.matmul(p, onehot, table)

    def embed_public(self, table: Weight, indices: Sequence[int]) -> RShare:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if isinstance(table, PublicWeight):
            rows = table.ring[idx]
            zero = torch.zeros_like(rows)
            return RShare(zero, zero.clone(), self.party.pid, table.f).add_ring(rows)
        return table.map(lambda t: t[idx])

    # linear algebra
    def _matmul(self, x: RShare, w: Weight) -> RShare:
        p = self.party
        if isinstance(w, PublicWeight):
            raw = RShare(ring_matmul(x.a, w.ring), ring_matmul(x.b, w.ring), p.pid, x.f + w.f)
            return trunc(p, raw, w.f)
        return arith.matmul(p, x, w)

    def _add_bias(self, y: RShare, b: Weight | None) -> RShare:
        if b is None:
            return y
        if isinstance(b, PublicWeight):
            return y.add_ring(b.ring)
        return y + b

    def linear(self, x: RShare, w: Weight, b: Weight | None = None) -> RShare:
        with self.party.op("linear"):
            return self._add_bias(self._matmul(x, w), b)

    def linears(self, x: RShare, ws: Sequence[tuple[Weight, Weight | None]]) -> list[RShare]:
        """One matmul against the column-concatenated weights (cached per weight tuple). The
        separate weights then become column views of the concatenation, so that each weight is
        held once."""
        key = tuple(id(w) for w, _ in ws)
        if key not in self._concat:
            mats = [w for w, _ in ws]
            if isinstance(mats[0], PublicWeight):
                cat = PublicWeight(
                    torch.cat([m.ring for m in mats], 1),  # type: ignore[union-attr]
                    None,
                    mats[0].f,
                )
                start = 0
                for m in mats:
                    n = m.ring.shape[1]  # type: ignore[union-attr]
                    m.ring = cat.ring[:, start : start + n]  # type: ignore[union-attr]
                    start += n
            else:
                cat = RShare.cat(mats, dim=1)  # type: ignore[arg-type,assignment]
                start = 0
                for m in mats:
                    n = m.shape[1]
                    m.a, m.b = cat.a[:, start : start + n], cat.b[:, start : start + n]  # type: ignore[union-attr]
                    start += n
            self._concat[key] = cat
        with self.party.op("linear"):
            y = self._matmul(x, self._concat[key])
            outs, start = [], 0
            for w, b in ws:
                n = w.ring.shape[1] if isinstance(w, PublicWeight) else w.shape[1]
                outs.append(self._add_bias(y.map(lambda t, s=start, n=n: t[:, s : s + n]), b))
                start += n
            return outs

    def add(self, a: RShare, b: RShare) -> RShare:
        return a + b

    # norms and activations
    def _affine(self, w: Weight | None) -> torch.Tensor | RShare | None:
        return w.real if isinstance(w, PublicWeight) else w

    def rms_norm(self, x: RShare, w: Weight, eps: float) -> RShare:
        with self.party.op("rms_norm"):
            return norms.rms_norm(self.party, x, self._affine(w), eps)

    def layer_norm(self, x: RShare, w: Weight, b: Weight, eps: float) -> RShare:
        with self.party.op("layer_norm"):
            return norms.layer_norm(self.party, x, self._affine(w), self._affine(b), eps)

    def swiglu(self, gate: RShare, up: RShare) -> RShare:
        with self.party.op("swiglu"):
            return arith.mul(self.party, activations.silu(self.party, gate), up)

    def gelu(self, x: RShare) -> RShare:
        with self.party.op("gelu"):
            return activations.gelu(self.party, x)

    # attention
    def rope(
        self, x: RShare, positions: Sequence[int], *, n_heads: int, head_dim: int, theta: float
    ) -> RShare:
        """Rotate-half RoPE with public cos/sin tables encoded at 20 bits (one truncation).

        The truncation is deferred by one call: the first of two consecutive calls (q) returns
        the untruncated rotation (a correct share at f + 20 bits); the second (k) truncates both
        in the same 2 rounds and puts q's truncated components into q's object. `attention`
        truncates a q that is still pending."""
        cos, sin = self._rope_tables(tuple(positions), head_dim, theta)
        t, half = x.shape[0], head_dim // 2

        def rot(a: torch.Tensor) -> torch.Tensor:
            h = a.reshape(t, n_heads, head_dim)
            return torch.cat([-h[..., half:], h[..., :half]], dim=-1)

        def mix(a: torch.Tensor) -> torch.Tensor:
            y = a.reshape(t, n_heads, head_dim) * cos + rot(a) * sin
            return y.reshape(t, n_heads * head_dim)

        raw = x.map(mix).with_f(x.f + ROPE_BITS)
        pending, self._rope_pending = self._rope_pending, None
        if pending is None:
            self._rope_pending = raw
            return raw
        with self.party.op("rope"):
            q, k = trunc_mixed(self.party, [pending, raw], [ROPE_BITS, ROPE_BITS])
        pending.a, pending.b, pending.f = q.a, q.b, q.f
        return k

    def _rope_tables(
        self, positions: tuple[int, ...], head_dim: int, theta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Public cos/sin at ROPE_BITS for these positions (the last layout is kept: every
        layer of a forward step, q and k, uses the same)."""
        key = (positions, head_dim, theta)
        if self._rope_key != key:
            pos = torch.as_tensor(list(positions), dtype=torch.float64)
            inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
            ang = torch.outer(pos, inv)
            ang = torch.cat([ang, ang], dim=-1)[:, None, :]
            self._rope_key = key
            self._rope_cs = (encode(ang.cos(), ROPE_BITS), encode(ang.sin(), ROPE_BITS))
        return self._rope_cs

    def _flush_rope(self) -> None:
        pending, self._rope_pending = self._rope_pending, None
        if pending is not None:
            with self.party.op("rope"):
                q = trunc(self.party, pending, ROPE_BITS)
            pending.a, pending.b, pending.f = q.a, q.b, q.f

    def attention(
        self,
        q: RShare,
        k: RShare,
        v: RShare,
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        causal: bool,
        q_offset: int,
    ) -> RShare:
        self._flush_rope()
        with self.party.op("attention"):
            return attend(
                self.party,
                q,
                k,
                v,
                n_heads=n_heads,
                n_kv_heads=n_kv_heads,
                head_dim=head_dim,
                causal=causal,
                q_offset=q_offset,
            )

    # cache and outputs
    def new_cache(self, n_layers: int) -> list[list[RShare | None]]:
        return [[None, None] for _ in range(n_layers)]

    def cache_append(
        self, cache: list[list[RShare | None]], layer: int, k: RShare, v: RShare
    ) -> tuple[RShare, RShare]:
        old_k, old_v = cache[layer]
        if old_k is not None and old_v is not None:
            k, v = RShare.cat([old_k, k]), RShare.cat([old_v, v])
        cache[layer] = [k, v]
        return k, v

    def last_row(self, x: RShare) -> RShare:
        return x.map(lambda a: a[-1:])

    def next_token(self, logits: RShare, sampler: Sampler, step: int) -> int:
        """Greedy argmax in MPC, or, for temperature T > 0, the Gumbel-max trick on noise the
        parties generate themselves (`protocols.gumbel`, from their pairwise PRFs): argmax(logits
        + T g) = argmax(logits / T + g) is a sample of softmax(logits / T). The client's only
        sampling input is T (shared once per session, clamped in MPC to [0, T_MAX]); it cannot
        bias g, and the parties learn neither T, the distribution nor the sample. Only the index
        is opened, to the client, after a zero-sharing re-randomisation of the components it
        receives. top_p < 1 is refused."""
        if sampler.top_p < 1.0:
            raise InputError(
                "top_p < 1 is not supported in mpc mode: nucleus sampling needs a private sort "
                "of the whole vocabulary; use temperature sampling with top_p = 1"
            )
        p = self.party
        row = logits.map(lambda a: a[-1])
        if not sampler.greedy:
            with p.op("sampling_noise"):
                row = self._add_noise(row, sampler)
        with p.op("argmax"):
            _, idx = compare.argmax_lastdim(p, row)
        flat = idx.map(lambda a: a.reshape(1))
        masked = RShare(flat.a + p.rand.zero_share((1,)), flat.b, p.pid, 0)
        got = self.client.output(p.pid, reveal_to_client_payload(masked), (1,), 0)
        return -1 if got is None else int(got.item())

    def _add_noise(self, row: RShare, sampler: Sampler) -> RShare:
        """row + T g at max(f, gumbel.WORK_BITS) fractional bits (the logits are lifted exactly):
        |T g| <= T_MAX * 43 keeps the raw product (at 2 WORK_BITS) below 2^60."""
        p, w = self.party, gumbel.WORK_BITS
        if self._temperature is None:
            payload = self.client.sampling_temperature(p.pid, w, sampler)
            t = accept_client_share(p, payload, (1,))
            with p.op("input_check"):  # the same copy of each component at both holders
                self._input_check.check_consistent(t)
            self._temperature = _clamp_temperature(p, t)
        g = gumbel.gumbel(p, int(row.shape[-1]))
        out_f = max(row.f, w)
        (noise,) = arith.trunc_many(p, arith.raw_mul_many(p, [(self._temperature, g)]), out_f)
        return row.mul_ring(1 << (out_f - row.f)).with_f(out_f) + noise

    def mean_pool(self, x: RShare, *, normalize: bool) -> RShare:
        p = self.party
        with p.op("mean_pool"):
            m = arith.mul_public(p, x.map(lambda a: a.sum(0, keepdim=True)), 1.0 / x.shape[0])
            if not normalize:
                return m
            dim = m.shape[-1]
            return norms.rms_norm(p, m, torch.full((dim,), 1.0 / math.sqrt(dim)), eps=1e-12)

    def reveal(self, x: RShare) -> torch.Tensor:
        """Open `x` to the client (the in-process client hands it back to the caller)."""
        got = self.client.output(self.party.pid, reveal_to_client_payload(x), tuple(x.shape), x.f)
        return torch.empty(0) if got is None else got.float()

    def costs(self) -> CostReport:
        return self.party.meter.snapshot()


def attend(
    p: Party,
    q: RShare,
    k: RShare,
    v: RShare,
    *,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    causal: bool,
    q_offset: int,
) -> RShare:
    """Scaled dot-product attention of one sequence's rows q over its keys k and values v
    (grouped-query heads), on party `p` (a `Party.parallel` child in a batched step)."""
    t, s = q.shape[0], k.shape[0]
    rep = n_heads // n_kv_heads

    def heads(a: torch.Tensor, n: int, length: int) -> torch.Tensor:
        h = a.reshape(length, n, head_dim).transpose(0, 1)
        return h.repeat_interleave(rep, dim=0) if n != n_heads else h

    qh = q.map(lambda a: heads(a, n_heads, t))
    kh = k.map(lambda a: heads(a, n_kv_heads, s).transpose(1, 2))
    vh = v.map(lambda a: heads(a, n_kv_heads, s))
    log_d = math.log2(head_dim)
    if log_d == int(log_d) and int(log_d) % 2 == 0:  # 1/sqrt(d) is a power of two
        qh = qh.with_f(q.f + int(log_d) // 2)
    else:
        qh = arith.mul_public(p, qh, 1.0 / math.sqrt(head_dim))
    scores = trunc(p, arith.raw_matmul(p, qh, kh), qh.f + kh.f - q.f)
    mask = None
    if causal:
        rows = torch.arange(t)[:, None] + q_offset
        mask = torch.arange(s)[None, :] <= rows
    out = softmax.softmax_matmul(p, scores, vh, mask)
    return out.map(lambda a: a.transpose(0, 1).reshape(t, n_heads * head_dim))


def _clamp_temperature(p: Party, t: RShare) -> RShare:
    """The client's T (any ring value) clamped to [0, T_MAX] at gumbel.WORK_BITS: [T < 0] is the
    exact sign bit; [T > T_MAX] can wrap only for T near -2^63, where [T < 0] wins (12 rounds,
    once per session)."""
    t = t.with_f(gumbel.WORK_BITS)
    room = (-t).add_public(gumbel.T_MAX)
    neg, over = compare.ltz_many(p, [t, room])
    (d,) = arith.mul_bits(p, over, [room])
    capped = t + d
    (d2,) = arith.mul_bits(p, neg, [capped])
    return capped - d2
