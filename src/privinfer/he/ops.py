"""HeOps: the `Ops` interface on CKKS ciphertexts (encoder path: BERT / MiniLM), client-aided.

Security assumption: semi-honest server and client. The server computes on token-minor packed
ciphertexts with plaintext weights; the client encrypts its one-hot token ids, answers
refreshes (it sees only sigma=40-masked polynomials, see `he.refresh`) and receives what
`reveal` hands it. This first version simulates both sides in one process with one
`CkksContext`: the server paths call only public-key operations, and every decryption goes
through `LocalRefreshClient` or `reveal`. Shapes, token count, positions and the public
calibration ranges (`HeRanges`) are public; a value outside its range gives wrong results.
Decoder-only operations (rope, KV cache, sampling) are not implemented yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from privinfer.errors import InputError
from privinfer.he import attention as att
from privinfer.he import linear, packing, poly
from privinfer.he.ckks import PARAMS_16384, Ciphertext, CkksContext, CkksParams
from privinfer.he.refresh import LocalRefreshClient, Refresher
from privinfer.models.costs import CostReport
from privinfer.models.ops import Sampler, WeightKind


@dataclass(frozen=True)
class HeRanges:
    """Public input ranges the polynomial approximations rely on (calibrate in plaintext)."""

    layer_norm_var: tuple[float, float] = (1.0 / 64, 16.0)
    score_bound: float = 4.0  # softmax sees scores in [bound - 16, bound]
    softmax_sum: tuple[float, float] | None = None  # default (0.05, tokens)
    pooled_norm_sq: tuple[float, float] = (1.0 / 16, 64.0)
    gelu_wide: bool = False  # [-24, 24] (8 levels, 3.9e-3) instead of [-8, 8] (7, 6.7e-5)


@dataclass
class HeTensor:
    """A [rows, cols] activation, token-minor packed into ceil(cols / B) ciphertexts."""

    cts: list[Ciphertext]
    rows: int
    cols: int
    tokens: int


@dataclass(frozen=True)
class _Weight:
    kind: str
    value: np.ndarray


class HeOps:
    """`Ops` over CKKS with client-aided refresh; see the module docstring for the roles."""

    name = "he"

    def __init__(
        self,
        params: CkksParams = PARAMS_16384,
        *,
        ranges: HeRanges | None = None,
        value_bound: float = 256.0,
        cache_weights: bool = False,
    ) -> None:
        """`cache_weights` keeps encoded plaintexts per (weight, tokens, level): fast, but a
        384 x 1536 layer at 8 tokens, N=16384 holds 576 plaintexts of up to 1.4 MB each."""
        self.ctx = CkksContext.create_client(params)
        self.client = LocalRefreshClient(self.ctx)
        self.refresher = Refresher(self.ctx, self.client, value_bound=value_bound)
        self.ranges = ranges or HeRanges()
        self._costs = CostReport()
        self.cache_weights = cache_weights
        self._encoded: dict[tuple[int, int, int], linear.PackedMatrix] = {}

    # ---- bookkeeping -------------------------------------------------------------------
    @contextmanager
    def _op(self, op: str) -> Iterator[None]:
        s = self.refresher.stats
        before = (s.rounds, s.bytes_to_client, s.bytes_to_server)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._costs.record(
                op,
                wall_s=time.perf_counter() - t0,
                rounds=s.rounds - before[0],
                bytes_sent=s.bytes_to_client - before[1],
                bytes_received=s.bytes_to_server - before[2],
                refreshes=s.rounds - before[0],
            )

    def _ready(self, cts: list[Ciphertext], depth: int) -> list[Ciphertext]:
        """Refresh (one round trip for the batch) whatever would run out of levels."""
        low = [i for i, ct in enumerate(cts) if self.refresher.needs_refresh(ct, depth)]
        if not low:
            return list(cts)
        fresh = self.refresher.refresh([cts[i] for i in low])
        out = list(cts)
        for i, ct in zip(low, fresh, strict=True):
            out[i] = ct
        if self.refresher.needs_refresh(out[low[0]], depth):
            raise InputError(f"An operation needs {depth} levels, more than one refresh gives.")
        return out

    def _pack(self, rows: np.ndarray, tokens: int) -> list[np.ndarray]:
        return packing.pack_tokens(rows, self.ctx.params.slots, tokens)

    def _feature_sum(self, ct: Ciphertext, tokens: int) -> Ciphertext:
        """Every feature slot of a token gets the sum over this ciphertext's features."""
        slots, step = self.ctx.params.slots, tokens
        self.ctx.add_rotation_steps(
            {tokens << i for i in range((slots // tokens).bit_length() - 1)}
        )
        while step < slots:
            ct = self.ctx.add_many([ct, self.ctx.rotate(ct, step)])
            step *= 2
        return ct

    def _valid(self, x: HeTensor, c: int, scale: float = 1.0) -> np.ndarray:
        """Public 0/1 (times scale) mask of the real rows and columns in ciphertext c."""
        ones = np.zeros((x.rows, x.cols))
        ones[:, :] = scale
        return self._pack(ones, x.tokens)[c]

    # ---- weights and inputs ------------------------------------------------------------
    def prepare(self, name: str, weight: torch.Tensor, *, kind: WeightKind) -> _Weight:
        return _Weight(kind, weight.detach().to(torch.float64).numpy().copy())

    def embed(self, table: _Weight, ids: Sequence[int]) -> HeTensor:
        """Client encrypts one-hot ids; the server multiplies by the table (never sees ids)."""
        with self._op("embed"):
            ids = list(ids)
            vocab, dim = table.value.shape
            if not ids or min(ids) < 0 or max(ids) >= vocab:
                raise InputError("Token ids must be non-empty and inside the vocabulary.")
            onehot = np.zeros((len(ids), vocab))
            onehot[np.arange(len(ids)), ids] = 1.0
            tokens = 1 << max(0, (len(ids) - 1).bit_length())
            cts = [self.ctx.encrypt(v) for v in self._pack(onehot, tokens)]
            x = HeTensor(cts, len(ids), vocab, tokens)
            return self._matmul(x, table.value.T)

    def embed_public(self, table: _Weight, indices: Sequence[int]) -> np.ndarray:
        return table.value[list(indices)]

    # ---- linear algebra ----------------------------------------------------------------
    def _matmul(self, x: HeTensor, w: np.ndarray, handle: _Weight | None = None) -> HeTensor:
        cts = self._ready(x.cts, 1)
        level = self.ctx.level(cts[0])
        key = (id(handle), x.tokens, level)
        mat = self._encoded.get(key) if handle is not None else None
        if mat is None:
            mat = linear.encode_packed_matrix(self.ctx, w, x.tokens, level)
            if self.cache_weights and handle is not None:
                self._encoded[key] = mat  # the model holds `handle`, so its id stays unique
        self.ctx.add_rotation_steps(mat.rotation_steps())
        return HeTensor(linear.packed_matmul(self.ctx, mat, cts), x.rows, w.shape[0], x.tokens)

    def linear(self, x: HeTensor, w: _Weight, b: _Weight | None = None) -> HeTensor:
        with self._op("linear"):
            y = self._matmul(x, w.value, w)
            return y if b is None else self._add_public(y, np.tile(b.value, (y.rows, 1)))

    def linears(self, x: HeTensor, ws: Sequence[tuple[_Weight, _Weight | None]]) -> list[HeTensor]:
        return [self.linear(x, w, b) for w, b in ws]

    def _add_public(self, x: HeTensor, y: np.ndarray) -> HeTensor:
        vals = self._pack(y, x.tokens)
        return HeTensor(
            [self.ctx.add_plain(c, v) for c, v in zip(x.cts, vals, strict=True)],
            x.rows,
            x.cols,
            x.tokens,
        )

    def add(self, a: Any, b: Any) -> Any:
        with self._op("add"):
            if isinstance(a, HeTensor) and isinstance(b, HeTensor):
                n = len(a.cts)
                both = a.cts + b.cts
                if any(p.scale != q.scale for p, q in zip(a.cts, b.cts, strict=True)):
                    both = self._ready(both, 1)  # aligning scales may cost a level
                cts = [self.ctx.add(p, q) for p, q in zip(both[:n], both[n:], strict=True)]
                return HeTensor(cts, a.rows, a.cols, a.tokens)
            if isinstance(b, HeTensor):
                a, b = b, a
            if isinstance(a, HeTensor):
                return self._add_public(a, np.asarray(b))
            return np.asarray(a) + np.asarray(b)

    # ---- norms and activations ---------------------------------------------------------
    def _norm(
        self, x: HeTensor, w: _Weight, b: _Weight | None, eps: float, centre: bool
    ) -> HeTensor:
        ctx, t = self.ctx, x.tokens
        cts = self._ready(x.cts, 3)
        if centre:
            total = self._feature_sum(ctx.add_many(cts) if len(cts) > 1 else cts[0], t)
            means = [
                ctx.multiply_values(total, self._valid(x, c, 1.0 / x.cols)) for c in range(len(cts))
            ]
            cts = [ctx.sub(v, m) for v, m in zip(cts, means, strict=True)]
        squares = [ctx.multiply(v, v) for v in cts]
        var = self._feature_sum(ctx.add_many(squares) if len(squares) > 1 else squares[0], t)
        var = ctx.add_plain(ctx.multiply_values(var, 1.0 / x.cols), eps)
        inv = self._rsqrt(var, self.ranges.layer_norm_var)
        *cts, inv = self._ready(cts + [inv], 2)
        out = []
        gains = self._pack(np.tile(w.value, (x.rows, 1)), t)
        for c, v in enumerate(cts):
            y = ctx.multiply_values(ctx.multiply(v, inv), gains[c])
            out.append(y)
        y = HeTensor(out, x.rows, x.cols, t)
        return y if b is None else self._add_public(y, np.tile(b.value, (x.rows, 1)))

    def _rsqrt(self, x: Ciphertext, rng: tuple[float, float]) -> Ciphertext:
        """1/sqrt on a public range: degree-31 start, refresh, two Newton steps (1.1e-4 rel.
        on [1/64, 16] in float64; see poly.inverse_sqrt)."""
        lo, hi = rng
        start = poly.fit_chebyshev("inverse_sqrt", lambda v: 1.0 / np.sqrt(v), lo, hi, 31)
        (x,) = self._ready([x], poly.chebyshev_depth(31, lo, hi) + 1)
        half_x = self.ctx.multiply_scalar_to(x, 0.5, self.ctx.scale)
        y = poly.evaluate(self.ctx, x, start)
        for _ in range(2):
            half_x, y = self._ready([half_x, y], 3)
            y = poly.inverse_sqrt_step(self.ctx, half_x, y)
        return y

    def layer_norm(self, x: HeTensor, w: _Weight, b: _Weight, eps: float) -> HeTensor:
        with self._op("layer_norm"):
            return self._norm(x, w, b, eps, centre=True)

    def rms_norm(self, x: HeTensor, w: _Weight, eps: float) -> HeTensor:
        with self._op("rms_norm"):
            return self._norm(x, w, None, eps, centre=False)

    def _poly(self, x: HeTensor, approx: poly.Approximation) -> HeTensor:
        cts = self._ready(x.cts, poly.chebyshev_depth(approx.degree, approx.lo, approx.hi))
        return HeTensor([poly.evaluate(self.ctx, c, approx) for c in cts], x.rows, x.cols, x.tokens)

    def gelu(self, x: HeTensor) -> HeTensor:
        with self._op("gelu"):
            return self._poly(x, poly.GELU_WIDE if self.ranges.gelu_wide else poly.GELU)

    def swiglu(self, gate: HeTensor, up: HeTensor) -> HeTensor:
        with self._op("swiglu"):
            s = self._poly(gate, poly.SILU)
            cts = self._ready(s.cts + up.cts, 1)
            n = len(s.cts)
            prods = [self.ctx.multiply(p, q) for p, q in zip(cts[:n], cts[n:], strict=True)]
            return HeTensor(prods, gate.rows, gate.cols, gate.tokens)

    # ---- attention ---------------------------------------------------------------------
    def attention(
        self,
        q: HeTensor,
        k: HeTensor,
        v: HeTensor,
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        causal: bool,
        q_offset: int,
    ) -> HeTensor:
        """Diagonal-packed scores, polynomial exp and 1/x softmax (see `he.attention`)."""
        if n_kv_heads != n_heads or q_offset or q.rows != k.rows:
            raise InputError("HE attention supports full self-attention without GQA for now.")
        with self._op("attention"):
            ctx, t = self.ctx, q.tokens
            slots = ctx.params.slots
            ctx.add_rotation_steps(
                att.rotate_tokens_steps(t, slots) | att.head_sum_steps(t, head_dim, slots)
            )
            bound = self.ranges.score_bound
            lo, hi = self.ranges.softmax_sum or (0.05, float(t))
            tok = np.arange(slots) % t
            masks = []
            for r in range(t):
                keep = (tok < q.rows) & ((tok + r) % t < k.rows)
                if causal:
                    keep &= (tok + r) % t <= tok
                masks.append(keep.astype(np.float64))
            outs = []
            for qc, kc, vc in zip(q.cts, k.cts, v.cts, strict=True):
                qc, kc = self._ready([qc, kc], 3)
                scores = [ctx.add_plain(d, -bound) for d in att.scores(ctx, qc, kc, t, head_dim)]
                scores = self._ready(scores, poly.chebyshev_depth(15, -16.0, 0.0) + 1)
                exps = [
                    ctx.multiply_values(poly.exp(ctx, d), m)
                    for d, m in zip(scores, masks, strict=True)
                ]
                (total,) = self._ready([ctx.add_many(exps)], poly.chebyshev_depth(31, lo, hi) + 2)
                inv = poly.inverse(ctx, total, lo, hi)
                *exps, inv = self._ready(exps + [inv], 1)
                probs = [ctx.multiply(e, inv) for e in exps]
                parts = self._ready(probs + [vc], 2)
                outs.append(att.weighted_values(ctx, parts[:t], parts[t], t))
            return HeTensor(outs, q.rows, q.cols, t)

    # ---- outputs -----------------------------------------------------------------------
    def mean_pool(self, x: HeTensor, *, normalize: bool) -> HeTensor:
        with self._op("mean_pool"):
            ctx, t = self.ctx, x.tokens
            cts = self._ready(x.cts, 2)
            ctx.add_rotation_steps({1 << i for i in range(t.bit_length() - 1)})
            pooled = []
            for c, ct in enumerate(cts):
                ct = ctx.multiply_values(ct, self._valid(x, c, 1.0 / x.rows))
                step = 1
                while step < t:
                    ct = ctx.add_many([ct, ctx.rotate(ct, step)])
                    step *= 2
                first = self._valid(HeTensor([], 1, x.cols, t), c)
                pooled.append(ctx.multiply_values(ct, first))
            if normalize:
                squares = [ctx.multiply(p, p) for p in pooled]
                sq = self._feature_sum(ctx.add_many(squares) if len(squares) > 1 else squares[0], t)
                inv = self._rsqrt(sq, self.ranges.pooled_norm_sq)
                *pooled, inv = self._ready(pooled + [inv], 1)
                pooled = [ctx.multiply(p, inv) for p in pooled]
            return HeTensor(pooled, 1, x.cols, t)

    def reveal(self, x: Any) -> torch.Tensor:
        """Decrypt for the client (the output owner)."""
        if not isinstance(x, HeTensor):
            return torch.as_tensor(np.asarray(x), dtype=torch.float32)
        vecs = [self.ctx.decrypt(ct) for ct in x.cts]
        out = packing.unpack_tokens(vecs, x.tokens, x.cols, x.rows)
        return torch.as_tensor(out, dtype=torch.float32)

    def costs(self) -> CostReport:
        return self._costs

    # ---- decoder-only operations: not yet -----------------------------------------------
    def _decoder_only(self, *args: Any, **kwargs: Any) -> Any:
        raise InputError("HE mode runs encoders (BERT) only for now; decoding is not implemented.")

    rope = new_cache = cache_append = _decoder_only

    def last_row(self, x: HeTensor) -> HeTensor:
        return self._decoder_only(x)

    def next_token(self, logits: HeTensor, sampler: Sampler, step: int) -> int:
        return self._decoder_only(logits, sampler, step)
