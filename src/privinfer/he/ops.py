"""HeOps: the `Ops` interface on CKKS ciphertexts (server side), with a client-aided key holder.

Security assumption: semi-honest server and client. The server holds the weights in plaintext and
a public-key-only CKKS context (`CkksContext.from_public`); it never decrypts. Everything it needs
from the client goes through a `KeyHolder` (`he.session`): Galois keys for public rotation
steps, refreshes of sigma=40-masked ciphertexts, the client's encrypted input rows, and the
delivery of outputs (embedding, logits) to the client. The embedding table (and BERT's embedding
LayerNorm) is published to the client, which computes its input rows itself: the server never
sees token ids. Shapes, token count, positions and the calibrated ranges (`HeRanges`) are public.
Deliveries are masked to their valid slots, re-randomised and flooded (`he.privacy`): c1 is
fresh, but the flood is sized to the outputs' precision and does not statistically hide the
circuit's noise (the figures are in `privacy.figures`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from privinfer.errors import InputError
from privinfer.he import linear, packing, privacy, wire
from privinfer.he.ckks import PARAMS_16384, Ciphertext, CkksContext, CkksParams
from privinfer.he.decoder import DecoderMixin
from privinfer.he.nonlinear import CheckAccumulator, plan_rsqrt
from privinfer.he.norms import NonlinearMixin
from privinfer.he.ranges import HeRanges
from privinfer.he.refresh import Refresher
from privinfer.he.session import HeClient, KeyHolder, LocalKeyHolder
from privinfer.models.costs import CostReport
from privinfer.models.ops import WeightKind

__all__ = ["HeOps", "HeRanges", "HeTensor", "ClientRows"]
CLIENT_SIDE_PREFIXES = ("embeddings.", "model.embed_tokens.")
# Linear layers feeding a deep polynomial (refreshed first anyway): run at the lowest level.
FEEDS_ACTIVATION = ("intermediate.dense.weight", "gate_proj.weight", "up_proj.weight")
# Q/K/V at the lowest level too (refreshing q and k costs less than encoding W_q, W_k, W_v at
# 3 more primes); other products keep the 4 levels a LayerNorm after the residual add needs.
ATTENTION_HEADROOM, NORM_HEADROOM = 0, 4


@dataclass
class HeTensor:
    """Rows [start, start + rows) of a `tokens`-row token-minor packing, ceil(cols / B) cts."""

    cts: list[Ciphertext]
    rows: int
    cols: int
    tokens: int
    start: int = 0


@dataclass
class ClientRows:
    """Input rows computed by the client from published tables (value None on a real server)."""

    rows: int
    start: int
    value: torch.Tensor | None
    uploaded: HeTensor | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Weight:
    kind: str
    value: np.ndarray
    name: str = ""

    @property
    def client_side(self) -> bool:
        return self.name.startswith(CLIENT_SIDE_PREFIXES) and self.kind != "linear"


def planned_steps(slots: int, tokens: int) -> set[int]:
    """The Galois keys asked for in one batch before a forward pass (public: slots and T).

    +1 (token shifts, and sums over the T tokens of a block as chained +1 rotations), +2^i for
    T <= 2^i < slots (sums over features, chained rotations by T) and -2^i T for 2^i <= 32
    (negative giant steps of products, head broadcasts in attention); any other step is
    composed from these (`packing.naf_steps`), or asked for later if it cannot be.
    16 keys at N = 16384, T = 16, instead of all 25 +-2^i."""
    pos = {1} | {1 << i for i in range(slots.bit_length() - 1) if 1 << i >= tokens}
    return pos | {(-(tokens << i)) % slots for i in range(6) if tokens << i < slots}


@dataclass
class _Babies:
    """Baby-step rotations of one input, shared by several products (`HeOps.linears`)."""

    n1: int
    cts: dict[tuple[int, int], Ciphertext]


class HeOps(DecoderMixin, NonlinearMixin):
    """`Ops` over CKKS; see the module docstring for the roles."""

    name = "he"

    def __init__(
        self,
        params: CkksParams = PARAMS_16384,
        *,
        ranges: HeRanges | None = None,
        value_bound: float = 256.0,
        cache_weights: bool = False,
        keyholder: KeyHolder | None = None,
        context_tokens: int = 0,
        progress: Callable[[str], None] | None = None,
        circuit_privacy: bool = True,
    ) -> None:
        """`context_tokens` > 0 fixes the packing (decoders: the context capacity, a power of
        two); `cache_weights` keeps encoded plaintexts per (weight, tokens, level);
        `circuit_privacy` re-randomises and floods what goes to the client (`he.privacy`)."""
        self.keyholder = keyholder or LocalKeyHolder(HeClient.create(params))
        self.ctx = CkksContext.from_public(self.keyholder.public_bundle())
        self.ctx.pin_scale = True
        self.refresher = Refresher(self.ctx, self.keyholder, value_bound=value_bound)
        self.ranges = ranges or HeRanges()
        for lo, hi, _ in self.ranges.norm_plans():  # fail at session start, not layers later
            plan_rsqrt(lo, hi)
        self.context_tokens = context_tokens
        self.progress = progress
        self.checks = CheckAccumulator(self.ctx)
        self._costs = CostReport()
        self.cache_weights = cache_weights
        self._encoded: dict[tuple[int, int, int], linear.PackedMatrix] = {}
        self._calls: dict[str, int] = {}
        self.key_bytes = 0
        self.circuit_privacy = circuit_privacy
        self.flood_sigma = privacy.flood_sigma(self.ctx.params)
        self.value_bound = float(value_bound)
        self._init_decoder()

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

    def _call_index(self, what: str) -> int:
        i = self._calls.get(what, 0)
        self._calls[what] = i + 1
        if what == "attn" and self.progress is not None:  # one attention per layer
            self.progress(f"layer {i + 1}: attention ({self.refresher.stats.rounds} rounds so far)")
        return i

    def _steps(self, steps: set[int]) -> None:
        """Make sure rotations by `steps` work: ask the client for missing +-2^i keys."""
        slots = self.ctx.params.slots
        need = {p for s in steps for p in packing.naf_steps(s, slots)}
        missing = need - self.ctx.galois_steps
        if missing:
            got, data = self.keyholder.galois(sorted(missing))
            self.ctx.add_galois_batch(got, data)
            self.key_bytes += len(data)

    def _ready(self, cts: list[Ciphertext], depth: int) -> list[Ciphertext]:
        """Refresh (one round trip for the batch) whatever would run out of levels."""
        return self._ready_each([(ct, depth) for ct in cts])

    def _ready_each(self, pairs: list[tuple[Ciphertext, int]]) -> list[Ciphertext]:
        """Like `_ready` with a depth per ciphertext: one round for all that need it."""
        cts = [ct for ct, _ in pairs]
        low = [i for i, (ct, d) in enumerate(pairs) if self.refresher.needs_refresh(ct, d)]
        if not low:
            return list(cts)
        fresh = self.refresher.refresh([cts[i] for i in low])
        out = list(cts)
        for i, ct in zip(low, fresh, strict=True):
            out[i] = ct
        if any(self.refresher.needs_refresh(out[i], pairs[i][1]) for i in low):
            raise InputError("An operation needs more levels than one refresh gives.")
        return out

    def _pack(self, rows: np.ndarray, tokens: int) -> list[np.ndarray]:
        return packing.pack_tokens(rows, self.ctx.params.slots, tokens)

    def _feature_sum(self, ct: Ciphertext, tokens: int) -> Ciphertext:
        """Every feature slot of a token gets the sum over this ciphertext's features."""
        slots, step = self.ctx.params.slots, tokens
        self._steps({tokens << i for i in range((slots // tokens).bit_length() - 1)})
        while step < slots:
            ct = self.ctx.add_many([ct, self.ctx.rotate(ct, step)])
            step *= 2
        return ct

    def _token_sum(self, ct: Ciphertext, tokens: int) -> Ciphertext:
        """Slot j gets the sum of slots j .. j + tokens - 1: tokens - 1 chained rotations by
        +1 (the key every session holds), so no keys for 2, 4, .., tokens / 2 are needed
        (this sum runs twice per pass; those keys would cost ~11 MB each)."""
        self._steps({1})
        shifted, parts = ct, [ct]
        for _ in range(tokens - 1):
            shifted = self.ctx.rotate(shifted, 1)
            parts.append(shifted)
        return self.ctx.add_many(parts)

    def _valid(
        self, x: HeTensor, c: int, scale: float = 1.0, cols: int | None = None
    ) -> np.ndarray:
        """Public mask: `scale` on the valid rows and columns of ciphertext c, 0 elsewhere."""
        ones = np.zeros((x.tokens, x.cols))
        ones[x.start : x.start + x.rows, : cols or x.cols] = scale
        return self._pack(ones, x.tokens)[c]

    def _row_mask(self, x: HeTensor, inside: float, outside: float) -> np.ndarray:
        """Per-slot values: `inside` on valid rows, `outside` on others (all features)."""
        t = np.arange(self.ctx.params.slots) % x.tokens
        return np.where((t >= x.start) & (t < x.start + x.rows), inside, outside)

    # ---- weights and inputs ------------------------------------------------------------
    def prepare(self, name: str, weight: torch.Tensor, *, kind: WeightKind) -> _Weight:
        return _Weight(kind, weight.detach().to(torch.float64).numpy().copy(), name)

    def _tokens_for(self, rows: int) -> int:
        if self.context_tokens:
            return self.context_tokens
        return 1 << max(0, (rows - 1).bit_length())

    def embed(self, table: _Weight, ids: Sequence[int]) -> ClientRows:
        """A new forward pass: the client computes rows from the published table (never the
        server); in-process the rows are computed here on the client's behalf."""
        ids = list(ids)
        vocab = table.value.shape[0]
        if not ids or min(ids) < 0 or max(ids) >= vocab:
            raise InputError("Token ids must be non-empty and inside the vocabulary.")
        self._calls = {}
        self.checks.reset()
        self._upload_cols = table.value.shape[1]
        value = torch.as_tensor(table.value[ids], dtype=torch.float64)
        start = self._next_start(len(ids))
        self._steps(planned_steps(self.ctx.params.slots, self._tokens_for(start + len(ids))))
        return ClientRows(len(ids), start, value)

    def embed_public(self, table: _Weight, indices: Sequence[int]) -> Any:
        rows = torch.as_tensor(table.value[list(indices)], dtype=torch.float64)
        return ClientRows(len(rows), 0, rows) if table.client_side else rows.numpy()

    def _enc(self, x: Any) -> HeTensor:
        """Encrypted form of an operand: client rows are uploaded once (one message)."""
        if isinstance(x, HeTensor):
            return x
        if not isinstance(x, ClientRows):
            raise InputError("HE operations need encrypted activations.")
        if x.uploaded is None:
            tokens = self._tokens_for(x.start + x.rows)
            meta = {"tokens": tokens, "start": x.start, "rows": x.rows}
            data = self.keyholder.upload(meta, x.value)
            self.refresher.stats.bytes_to_server += len(data)
            cts = wire.unpack_ciphertexts(self.ctx, data)
            cols = x.value.shape[1] if x.value is not None else int(self._upload_cols)
            x.uploaded = HeTensor(cts, x.rows, cols, tokens, x.start)
        return x.uploaded

    # ---- linear algebra ----------------------------------------------------------------
    def _matmul(
        self,
        x: HeTensor,
        w: np.ndarray,
        handle: _Weight | None = None,
        babies: _Babies | None = None,
        headroom: int | None = None,
    ) -> HeTensor:
        cts = self._ready(x.cts, 1)
        level = self._linear_level(min(self.ctx.level(c) for c in cts), headroom)
        cts = [self.ctx.mod_switch_to(c, level) for c in cts]
        if not self.cache_weights or handle is None:
            # Streamed: each diagonal is encoded right before its product (few MB alive).
            n1 = (
                babies.n1
                if babies
                else linear.streamed_n1(w.shape, self.ctx.params.slots, x.tokens)
            )
            self._steps(linear.streamed_steps(w.shape, self.ctx.params.slots, x.tokens, n1))
            out = linear.streamed_matmul(self.ctx, w, cts, x.tokens, babies and babies.cts, n1)
            return HeTensor(out, x.rows, w.shape[0], x.tokens, x.start)
        key = (id(handle), x.tokens, level)
        mat = self._encoded.get(key)
        if mat is None:
            mat = linear.encode_packed_matrix(self.ctx, w, x.tokens, level)
            self._encoded[key] = mat  # the model holds `handle`, so its id stays unique
        self._steps(mat.rotation_steps())
        out = linear.packed_matmul(self.ctx, mat, cts)
        return HeTensor(out, x.rows, w.shape[0], x.tokens, x.start)

    def _linear_level(self, level: int, headroom: int | None) -> int:
        """Level to run a product at: at most `headroom` levels above what the output needs
        to stay refreshable. Encoding, products and rotations cost about one unit per prime,
        so extra levels that the next operation would not use are dropped first (free)."""
        if headroom is None:
            return level
        low = max(self.refresher.level, self.ctx.params.floor_level) + 1
        return min(level, low + headroom)

    @staticmethod
    def _headroom(names: Sequence[str], default: int) -> int:
        """Levels a linear output needs before its next refresh: 0 before a deep activation
        (GELU / SiLU inputs are refreshed anyway), else `default` (see the constants above)."""
        return 0 if names and all(n.endswith(FEEDS_ACTIVATION) for n in names) else default

    def linear(self, x: Any, w: _Weight, b: _Weight | None = None) -> HeTensor:
        with self._op("linear"):
            x = self._enc(x)
            y = self._matmul(x, w.value, w, headroom=self._headroom([w.name], NORM_HEADROOM))
            return y if b is None else self._add_public(y, b.value)

    def linears(self, x: Any, ws: Sequence[tuple[_Weight, _Weight | None]]) -> list[HeTensor]:
        """Several products of one input: its baby-step rotations are computed once."""
        shapes = {w.value.shape for w, _ in ws}
        if self.cache_weights or len(ws) < 2 or len(shapes) > 1:
            return [self.linear(x, w, b) for w, b in ws]
        outs: list[HeTensor] = []
        babies: _Babies | None = None
        room = self._headroom([w.name for w, _ in ws], ATTENTION_HEADROOM)
        for w, b in ws:
            with self._op("linear"):  # one record per product; the first pays the rotations
                if babies is None:
                    x = self._enc(x)
                    cts = self._ready(x.cts, 1)
                    level = self._linear_level(min(self.ctx.level(c) for c in cts), room)
                    cts = [self.ctx.mod_switch_to(c, level) for c in cts]
                    x = HeTensor(cts, x.rows, x.cols, x.tokens, x.start)
                    n1 = linear.streamed_n1(w.value.shape, self.ctx.params.slots, x.tokens, len(ws))
                    babies = _Babies(n1, linear.packed_babies(self.ctx, cts, x.tokens, n1))
                y = self._matmul(x, w.value, w, babies, room)
                outs.append(y if b is None else self._add_public(y, b.value))
        return outs

    def _add_public(self, x: HeTensor, row: np.ndarray) -> HeTensor:
        full = np.zeros((x.tokens, x.cols))
        full[x.start : x.start + x.rows] = np.broadcast_to(np.asarray(row), (x.rows, x.cols))
        vals = self._pack(full, x.tokens)
        cts = [self.ctx.add_plain(c, v) for c, v in zip(x.cts, vals, strict=True)]
        return HeTensor(cts, x.rows, x.cols, x.tokens, x.start)

    def add(self, a: Any, b: Any) -> Any:
        with self._op("add"):
            if isinstance(a, ClientRows) and isinstance(b, ClientRows):
                value = None if a.value is None or b.value is None else a.value + b.value
                return ClientRows(a.rows, a.start, value)
            a, b = (
                (self._enc(a) if isinstance(a, ClientRows) else a),
                (self._enc(b) if isinstance(b, ClientRows) else b),
            )
            if isinstance(a, HeTensor) and isinstance(b, HeTensor):
                n = len(a.cts)
                both = a.cts + b.cts
                if any(p.scale != q.scale for p, q in zip(a.cts, b.cts, strict=True)):
                    both = self._ready(both, 1)  # aligning scales may cost a level
                cts = [self.ctx.add(p, q) for p, q in zip(both[:n], both[n:], strict=True)]
                return HeTensor(cts, a.rows, a.cols, a.tokens, a.start)
            if isinstance(b, HeTensor):
                a, b = b, a
            if isinstance(a, HeTensor):
                return self._add_public(a, np.asarray(b))
            return np.asarray(a) + np.asarray(b)

    def _client_layer_norm(self, x: ClientRows, w: _Weight, b: _Weight, eps: float) -> ClientRows:
        self._call_index("norm")
        if x.value is None:
            return x
        y = F.layer_norm(
            x.value, (x.value.shape[-1],), torch.as_tensor(w.value), torch.as_tensor(b.value), eps
        )
        return ClientRows(x.rows, x.start, y)

    # ---- outputs -----------------------------------------------------------------------
    def _deliver(self, x: HeTensor, kind: str) -> Any:
        """Send x (plus the range-check total) to the client; returns what the client says.
        With `circuit_privacy` the output ciphertexts are first multiplied by the public 0/1
        mask of their valid rows and columns (the other slots hold values the client is not
        owed: logits of earlier positions, padded rows computed from pad values), then every
        ciphertext is mod-switched to the delivery level, re-randomised and flooded
        (`privacy.sanitize`)."""
        cts = list(x.cts)
        meta = {
            "tokens": x.tokens,
            "cols": x.cols,
            "rows": x.rows,
            "start": x.start,
            "n_out": len(cts),
            "overflow_checks": self.checks.overflow_checks,
        }
        check = self._check_total(x.tokens)
        if check is not None:
            cts.append(check)
        if self.circuit_privacy:
            with self._op("circuit_privacy"):
                n_out = len(x.cts)  # outputs drop to the delivery level, the check keeps its own
                outs = self._ready(cts[:n_out], 1)
                outs = [self.ctx.multiply_values(c, self._valid(x, i)) for i, c in enumerate(outs)]
                cts = outs + cts[n_out:]
                cts = [
                    privacy.sanitize(self.ctx, c, self.flood_sigma, self.value_bound, i < n_out)
                    for i, c in enumerate(cts)
                ]
        payload = wire.pack_ciphertexts(self.ctx, cts)
        self.refresher.stats.bytes_to_client += len(payload)
        if kind == "reveal":
            return self.keyholder.reveal(meta, payload)
        return self.keyholder.choose(meta, payload)

    def _check_total(self, tokens: int) -> Ciphertext | None:
        """The sum of every check term over all slots (in every slot), for a pass packed with
        `tokens` rows (its keys: 2^i >= tokens and +1)."""
        terms = self.checks.terms
        if not terms:
            return None
        ctx = self.ctx
        bottom = min(ctx.level(t) for t in terms)
        total = ctx.add_many([ctx.mod_switch_to(t, bottom) for t in terms])
        total = self._token_sum(self._feature_sum(total, tokens), tokens)
        self.checks.reset()
        return total

    def reveal(self, x: Any) -> torch.Tensor:
        """Hand x to the client (the output owner); in-process, the decrypted tensor."""
        if not isinstance(x, HeTensor):
            return torch.as_tensor(np.asarray(x), dtype=torch.float32)
        out = self._deliver(x, "reveal")
        return out if out is not None else torch.zeros(x.rows, x.cols)

    def costs(self) -> CostReport:
        return self._costs
