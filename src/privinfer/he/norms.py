"""HeOps' nonlinear operations: LayerNorm/RMSNorm, GELU/SwiGLU, softmax attention, pooling.

Security assumption: server side only (public keys, plaintext weights); ranges, degrees and
iteration counts are public (`he.ranges`, `he.nonlinear`); refreshes go to the key holder and
reveal only masked values; padded and not-yet-valid rows are handled with public masks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from privinfer.errors import InputError
from privinfer.he import attention as att
from privinfer.he import poly
from privinfer.he.ckks import Ciphertext
from privinfer.he.nonlinear import (
    EXP_HALF,
    REL_TARGET,
    chebyshev_with_check,
    plan_activation,
    plan_inverse,
    plan_rsqrt,
    squarings_for,
)


class NonlinearMixin:
    """Mixed into HeOps (uses its ctx, _ready, _enc, _op, _feature_sum, _valid, checks)."""

    # ---- 1/x and 1/sqrt(x) with refreshes between the Newton steps -----------------------
    def _inverse_like(
        self,
        x: Ciphertext,
        lo: float,
        hi: float,
        rsqrt: bool,
        check: np.ndarray | None,
        target: float = REL_TARGET,
    ) -> Ciphertext:
        ctx = self.ctx
        start, steps, _ = plan_rsqrt(lo, hi) if rsqrt else plan_inverse(lo, hi, target)
        (x,) = self._ready([x], poly.chebyshev_depth(start.degree, lo, hi) + 1)
        xs = ctx.multiply_scalar_to(x, 0.5, ctx.scale) if rsqrt else x
        y = poly.evaluate(ctx, x, start)
        for _ in range(steps):
            xs, y = self._ready([xs, y], 3 if rsqrt else 2)
            if rsqrt:
                y = poly.inverse_sqrt_step(ctx, xs, y)
            else:
                y = ctx.multiply(y, ctx.add_plain(ctx.negate(ctx.multiply(xs, y)), 2.0))
        if check is not None:  # residual x y^2 - 1 (or x y - 1), squared, per valid token
            xs, y = self._ready([xs, y], 3 if rsqrt else 2)
            r = ctx.multiply(ctx.multiply(xs, y), y) if rsqrt else ctx.multiply(xs, y)
            r = ctx.add_plain(r, -0.5 if rsqrt else -1.0)
            (r,) = self._ready([r], 2)
            self.checks.add(ctx.multiply(r, r), check * (4.0 if rsqrt else 1.0), overflow=False)
        return y

    # ---- norms -------------------------------------------------------------------------
    def _norm(self, x: Any, w: Any, b: Any | None, eps: float, centre: bool) -> Any:
        index = self._call_index("norm")
        x = self._enc(x)
        ctx, t = self.ctx, x.tokens
        lo, hi, first = self.ranges.norm_plan(index)
        first = first if x.start == 0 and first != 1.0 else 1.0  # is position 0 a valid row?
        extra = int(centre and first != 1.0)
        cts = self._ready(x.cts, 4 + extra)
        # 4 levels suffice (mean or row-0 scaling, square, row mask; the variance is refreshed
        # for 1/sqrt) and leave the output 1 above the refresh level: fewer primes, cheaper
        # rotations.
        low = max(self.refresher.level, ctx.params.floor_level) + 4 + extra
        cts = [ctx.mod_switch_to(c, min(ctx.level(c), low)) for c in cts]
        if first != 1.0:  # row 0 times sqrt(first): its mean square lands in [lo, hi], and
            # (row sqrt(first)) / sqrt(first ms) is the row's norm: no other change (ranges.py)
            row0 = np.where(np.arange(ctx.params.slots) % t == 0, math.sqrt(first), 1.0)
            cts = [ctx.multiply_values(v, row0) for v in cts]
        if centre:
            total = self._feature_sum(ctx.add_many(cts) if len(cts) > 1 else cts[0], t)
            means = [
                ctx.multiply_values(total, self._valid(x, c, 1.0 / x.cols)) for c in range(len(cts))
            ]
            cts = [ctx.sub(v, m) for v, m in zip(cts, means, strict=True)]
        squares = [ctx.multiply(v, v) for v in cts]
        var = self._feature_sum(ctx.add_many(squares) if len(squares) > 1 else squares[0], t)
        # Valid rows: mean square + eps; other rows (padding, past tokens): a public in-range pad.
        var = ctx.multiply_values(var, self._row_mask(x, 1.0 / x.cols, 0.0))
        var = ctx.add_plain(var, self._row_mask(x, eps, math.sqrt(lo * hi)))
        check = self._row_mask(x, 1.0, 0.0) / (ctx.params.slots // t)
        inv = self._inverse_like(var, lo, hi, rsqrt=True, check=check)
        *cts, inv = self._ready(cts + [inv], 2)
        gains = self._pack(np.tile(w.value, (t, 1)), t)
        out = [
            ctx.multiply_values(ctx.multiply(v, inv), g) for v, g in zip(cts, gains, strict=True)
        ]
        y = type(x)(out, x.rows, x.cols, t, x.start)
        return y if b is None else self._add_public(y, b.value)

    def layer_norm(self, x: Any, w: Any, b: Any, eps: float) -> Any:
        with self._op("layer_norm"):
            if getattr(w, "client_side", False):
                return self._client_layer_norm(x, w, b, eps)
            return self._norm(x, w, b, eps, centre=True)

    def rms_norm(self, x: Any, w: Any, eps: float) -> Any:
        with self._op("rms_norm"):
            return self._norm(x, w, None, eps, centre=False)

    # ---- activations -------------------------------------------------------------------
    def _activation(self, x: Any, name: str) -> Any:
        lo, hi = self.ranges.at(self.ranges.act, self._call_index("act"))
        approx = plan_activation(name, lo, hi)
        x = self._enc(x)
        cts = self._ready(x.cts, poly.chebyshev_depth(approx.degree, lo, hi))
        out = []
        for c, ct in enumerate(cts):
            y, tm2 = chebyshev_with_check(self.ctx, ct, approx)
            out.append(y)
            mask = self._valid(x, c)
            self.checks.add(tm2, mask / max(mask.sum(), 1.0), overflow=True)
        return type(x)(out, x.rows, x.cols, x.tokens, x.start)

    def gelu(self, x: Any) -> Any:
        with self._op("gelu"):
            return self._activation(x, "gelu")

    def swiglu(self, gate: Any, up: Any) -> Any:
        with self._op("swiglu"):
            s = self._activation(gate, "silu")
            up = self._enc(up)
            cts = self._ready(s.cts + up.cts, 1)
            n = len(s.cts)
            prods = [self.ctx.multiply(p, q) for p, q in zip(cts[:n], cts[n:], strict=True)]
            return type(s)(prods, gate.rows, gate.cols, s.tokens, s.start)

    # ---- attention ---------------------------------------------------------------------
    def _softmax_masks(self, q: Any, k: Any, causal: bool) -> tuple[list[np.ndarray], np.ndarray]:
        """Public keep-masks per score diagonal and 1/count per query row (0 on invalid rows)."""
        t, slots = q.tokens, self.ctx.params.slots
        tok = np.arange(slots) % t
        qvalid = (tok >= q.start) & (tok < q.start + q.rows)
        masks, count = [], np.zeros(slots)
        for r in range(t):
            key = (tok + r) % t
            keep = qvalid & (key >= k.start) & (key < k.start + k.rows)
            if causal:
                keep &= key <= tok
            masks.append(keep.astype(np.float64))
            count += keep
        inv_count = np.where(count > 0, 1.0 / np.maximum(count, 1), 0.0)
        return masks, inv_count

    def _softmax_av(self, qc, kc, vc, q: Any, k: Any, head_dim: int, bound: float, causal: bool):
        """softmax(q k^T / sqrt(d)) v for one block of heads, by normalised squaring."""
        ctx, t = self.ctx, q.tokens
        rounds = squarings_for(bound)
        masks, inv_count = self._softmax_masks(q, k, causal)
        invalid_row = (inv_count == 0).astype(np.float64)
        qc, kc = self._ready([qc, kc], 3)
        factor = 1.0 / (math.sqrt(head_dim) * 2**rounds)
        active = [r for r in range(t) if masks[r].any()]  # causal: some diagonals are empty
        if att.packed_fits(len(active), t, head_dim, ctx.params.slots):
            return self._softmax_av_packed(qc, kc, vc, masks, inv_count, active, q, k, head_dim,
                                           factor, rounds, causal)  # fmt: skip
        scores = att.scores(ctx, qc, kc, t, head_dim, factor=factor, diagonals=active)
        scores = self._ready(scores, poly.chebyshev_depth(EXP_HALF.degree, -2.0, 2.0) + 2)
        probs = []
        n_valid = max(sum(masks[r].sum() for r in active), 1.0)
        for r, d in zip(active, scores, strict=True):
            e, tm2 = chebyshev_with_check(ctx, d, EXP_HALF)
            probs.append(ctx.multiply_values(e, masks[r]))  # noqa: B023
            self.checks.add(tm2, masks[r] / n_valid, overflow=True)
        max_n = float(q.start + q.rows if causal else k.rows)
        for j in range(rounds + 1):
            if j:
                probs = self._ready(probs, 1)
                probs = [ctx.multiply(p, p) for p in probs]
            total = ctx.add_many(probs)
            (total,) = self._ready([total], 1)
            mean = ctx.add_plain(ctx.multiply_values(total, inv_count), invalid_row)
            lo, hi = (math.exp(-2) / 1.1, math.exp(2) * 1.1) if j == 0 else (0.9, max_n * 1.1)
            inv = self._inverse_like(mean, lo, hi, rsqrt=False, check=None)
            *probs, inv = self._ready(probs + [inv], 1)
            probs = [ctx.multiply(p, inv) for p in probs]
        probs = self._ready(probs, 1)
        probs = [ctx.multiply_values(p, inv_count) for p in probs]
        *probs, vc = self._ready(probs + [vc], 2)
        terms = [
            ctx.multiply(p, att.rotate_tokens(ctx, vc, r, t))
            for r, p in zip(active, probs, strict=True)
        ]
        level = min(ctx.level(x) for x in terms)
        return ctx.add_many([ctx.mod_switch_to(x, level) for x in terms])

    def _softmax_av_packed(self, qc, kc, vc, masks, inv_count, active, q, k, head_dim: int,
                           factor: float, rounds: int, causal: bool):  # fmt: skip
        """The same softmax on ONE ciphertext: all diagonals packed (`attention.packed_*`)."""
        ctx, t, slots = self.ctx, q.tokens, self.ctx.params.slots
        j_of = (np.arange(slots) // t) % head_dim  # diagonal index held by each slot
        keep = np.zeros(slots)
        for j, r in enumerate(active):
            keep = np.where(j_of == j, masks[r], keep)
        count = np.where(j_of < len(active), inv_count, 0.0)
        invalid = (count == 0).astype(np.float64)
        low = max(self.refresher.level, ctx.params.floor_level)  # rotations cost ~ primes:
        qc, kc = (ctx.mod_switch_to(c, min(ctx.level(c), low + 3)) for c in (qc, kc))  # drop
        p = att.packed_scores(ctx, qc, kc, t, head_dim, factor, active)
        (p,) = self._ready([p], poly.chebyshev_depth(EXP_HALF.degree, -2.0, 2.0) + 2)
        e, tm2 = chebyshev_with_check(ctx, p, EXP_HALF)
        p = ctx.multiply_values(e, keep)
        self.checks.add(tm2, keep / max(keep.sum(), 1.0), overflow=True)
        max_n = float(q.start + q.rows if causal else k.rows)
        for j in range(rounds + 1):
            if j:
                (p,) = self._ready([p], 1)
                p = ctx.multiply(p, p)
            total = att.packed_row_sum(ctx, p, t, head_dim)
            # p rides along: 2 levels (times 1/mean, next square) in the same round trip
            total, p = self._ready_each([(total, 1), (p, 2)])
            mean = ctx.add_plain(ctx.multiply_values(total, count), invalid)
            lo, hi = (math.exp(-2) / 1.1, math.exp(2) * 1.1) if j == 0 else (0.9, max_n * 1.1)
            target = REL_TARGET if j == rounds else 1e-2  # a row factor the last round removes
            inv = self._inverse_like(mean, lo, hi, rsqrt=False, check=None, target=target)
            p, inv = self._ready([p, inv], 1)
            p = ctx.multiply(p, inv)
        # 3 levels (not 2): A V lands one above the refresh level, so the next product (the
        # output projection) needs no refresh; refreshing v here shares p's round.
        p, vc = (ctx.mod_switch_to(c, min(ctx.level(c), low + 3)) for c in self._ready([p, vc], 3))
        return att.packed_weighted_values(ctx, p, vc, t, head_dim, active, inv_count)

    def attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        causal: bool,
        q_offset: int,
    ) -> Any:
        """Diagonal-packed scores, softmax by normalised squaring (see `he.nonlinear`)."""
        with self._op("attention"):
            q, k, v = self._enc(q), self._enc(k), self._enc(v)
            if q.tokens != k.tokens:
                raise InputError("HE attention needs queries and keys in one packing.")
            if n_kv_heads != n_heads:
                k, v = (self._expand_heads(x, n_heads, n_kv_heads, head_dim) for x in (k, v))
            slots, t = self.ctx.params.slots, q.tokens
            if att.packed_fits(t, t, head_dim, slots):  # every diagonal fits: packed path
                self._steps(att.packed_steps(t, head_dim, slots))
            else:
                steps = att.rotate_tokens_steps(t, slots) | att.head_sum_steps(t, head_dim, slots)
                self._steps(steps | att.packed_steps(t, head_dim, slots))
            bound = self.ranges.at(self.ranges.score_abs, self._call_index("attn"))
            outs = [
                self._softmax_av(qc, kc, vc, q, k, head_dim, bound, causal)
                for qc, kc, vc in zip(q.cts, k.cts, v.cts, strict=True)
            ]
            return type(q)(outs, q.rows, q.cols, t, q.start)

    def _expand_heads(self, x: Any, n_heads: int, n_kv_heads: int, head_dim: int) -> Any:
        """GQA: repeat each kv head n_heads / n_kv_heads times (a public 0/1 linear map)."""
        rep = n_heads // n_kv_heads
        e = np.zeros((n_heads * head_dim, n_kv_heads * head_dim))
        for h in range(n_heads):
            kv = h // rep
            e[h * head_dim : (h + 1) * head_dim, kv * head_dim : (kv + 1) * head_dim] = np.eye(
                head_dim
            )
        return self._matmul(x, e)

    # ---- pooling -----------------------------------------------------------------------
    def mean_pool(self, x: Any, *, normalize: bool) -> Any:
        with self._op("mean_pool"):
            x = self._enc(x)
            ctx, t = self.ctx, x.tokens
            cts = self._ready(x.cts, 2)
            pooled = []
            for c, ct in enumerate(cts):
                ct = self._token_sum(ctx.multiply_values(ct, self._valid(x, c, 1.0 / x.rows)), t)
                first = self._valid(type(x)([], 1, x.cols, t), c)
                pooled.append(ctx.multiply_values(ct, first))
            out = type(x)(pooled, 1, x.cols, t)
            if normalize:
                lo, hi = self.ranges.pooled_norm_sq
                squares = [ctx.multiply(p, p) for p in pooled]
                sq = self._feature_sum(ctx.add_many(squares) if len(squares) > 1 else squares[0], t)
                sq = ctx.add_plain(sq, self._row_mask(out, 0.0, math.sqrt(lo * hi)))
                check = self._row_mask(out, 1.0, 0.0) / (ctx.params.slots // t)
                inv = self._inverse_like(sq, lo, hi, rsqrt=True, check=check)
                *pooled, inv = self._ready(pooled + [inv], 1)
                out.cts = [ctx.multiply(p, inv) for p in pooled]
            return out
