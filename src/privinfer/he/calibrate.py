"""Public range calibration for HE approximations: plaintext runs on a public calibration set.

Security assumption: calibration runs on public text with the server's weights, so the ranges it
produces are public (they describe the model, not any client's input). `RecordingOps` is the
plain engine plus per-call range bookkeeping; it never sees client data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from privinfer.engines.plain import PlainOps

# Twenty public calibration / fidelity sentences: ten pairs of paraphrases (used by the bench,
# the CLI fidelity check and, as a subset, by the tests).
SENTENCES = [
    "The cat sat quietly on the warm mat.",
    "A cat was resting on the mat.",
    "Stock markets fell sharply after the announcement.",
    "Share prices dropped following the news.",
    "She plays the violin in an orchestra.",
    "The musician performs with a symphony.",
    "Heavy rain flooded the streets of the city.",
    "The town's roads were under water after the storm.",
    "He forgot his keys at home this morning.",
    "This morning he left the house without his keys.",
    "Quantum computers use qubits instead of bits.",
    "Qubits replace classical bits in quantum machines.",
    "The recipe needs two eggs and a cup of flour.",
    "You will need flour and eggs for this dish.",
    "Our team won the championship last night.",
    "Yesterday evening we won the final game.",
    "The train to Paris leaves at nine o'clock.",
    "At nine the Paris train departs.",
    "Bees collect nectar from flowers in spring.",
    "In spring, flowers are visited by bees gathering nectar.",
]


@dataclass
class CallRanges:
    """Observed [min, max] of one quantity for each call index within one forward pass."""

    lo: list[float] = field(default_factory=list)
    hi: list[float] = field(default_factory=list)

    def record(self, index: int, lo: float, hi: float) -> None:
        while len(self.lo) <= index:
            self.lo.append(math.inf)
            self.hi.append(-math.inf)
        self.lo[index] = min(self.lo[index], lo)
        self.hi[index] = max(self.hi[index], hi)

    def pairs(self) -> list[tuple[float, float]]:
        return list(zip(self.lo, self.hi, strict=True))


class RecordingOps(PlainOps):
    """PlainOps that records, per call index, the inputs every HE approximation depends on:
    norm variances (mean square for RMSNorm), |attention score| maxima, GELU/SiLU inputs and
    the pooled squared norm. `reset_pass(first_row)` starts a new forward pass (call indices
    restart); with first_row=True the pass's row 0 is position 0, whose norm variance is
    recorded apart (`norm_first`, see `HeRanges`)."""

    name = "plain-recording"

    def __init__(self) -> None:
        super().__init__()
        self.norm_var = CallRanges()
        self.norm_first = CallRanges()
        self.first_row = False
        self.score_abs = CallRanges()
        self.act_in = CallRanges()
        self.pooled_norm_sq = CallRanges()
        self._idx: dict[str, int] = {}

    def reset_pass(self, first_row: bool = False) -> None:
        self._idx = {}
        self.first_row = first_row

    def _record_norm(self, var: torch.Tensor) -> None:
        i = self._next("norm")
        if self.first_row:
            self.norm_first.record(i, float(var[0]), float(var[0]))
            var = var[1:]
        if len(var):
            self.norm_var.record(i, float(var.min()), float(var.max()))

    def _next(self, what: str) -> int:
        i = self._idx.get(what, 0)
        self._idx[what] = i + 1
        return i

    def layer_norm(self, x, w, b, eps):
        self._record_norm(x.double().var(dim=-1, unbiased=False) + eps)
        return super().layer_norm(x, w, b, eps)

    def rms_norm(self, x, w, eps):
        self._record_norm(x.double().pow(2).mean(dim=-1) + eps)
        return super().rms_norm(x, w, eps)

    def gelu(self, x):
        self.act_in.record(self._next("act"), float(x.min()), float(x.max()))
        return super().gelu(x)

    def swiglu(self, gate, up):
        self.act_in.record(self._next("act"), float(gate.min()), float(gate.max()))
        return super().swiglu(gate, up)

    def attention(self, q, k, v, *, n_heads, n_kv_heads, head_dim, causal, q_offset):
        t, s = q.shape[0], k.shape[0]
        qh = q.double().view(t, n_heads, head_dim).transpose(0, 1)
        kh = k.double().view(s, n_kv_heads, head_dim).transpose(0, 1)
        kh = kh.repeat_interleave(n_heads // n_kv_heads, dim=0)
        sc = qh @ kh.transpose(1, 2) / math.sqrt(head_dim)
        if causal:
            mask = torch.arange(s)[None, :] <= torch.arange(t)[:, None] + q_offset
            sc = sc.masked_fill(~mask, 0.0)
        self.score_abs.record(self._next("attn"), 0.0, float(sc.abs().max()))
        return super().attention(
            q,
            k,
            v,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            causal=causal,
            q_offset=q_offset,
        )

    def mean_pool(self, x, *, normalize):
        m = x.double().mean(dim=0)
        n2 = float(m.pow(2).sum())
        self.pooled_norm_sq.record(0, n2, n2)
        return super().mean_pool(x, normalize=normalize)


def calibrate_encoder(model, id_lists: Iterable[Sequence[int]]) -> RecordingOps:
    """Run an `EmbeddingModel` in plaintext on public id lists and return the recorded ranges."""
    ops = RecordingOps()
    bert = model.build(ops)
    with torch.inference_mode():
        for ids in id_lists:
            ops.reset_pass(first_row=True)
            bert.encode(list(ids))
    return ops


def calibrate_decoder(
    model, id_lists: Iterable[Sequence[int]], new_tokens: int = 4
) -> RecordingOps:
    """Run a LLaMA `Llama` definition in plaintext (prefill + a few greedy steps) per id list."""
    ops = RecordingOps()
    llama = model.build(ops) if hasattr(model, "build") else model(ops)
    with torch.inference_mode():
        for ids in id_lists:
            cache = llama.new_cache()
            ops.reset_pass(first_row=True)
            logits = llama.forward(list(ids), cache, 0)
            pos = len(ids)
            for _ in range(new_tokens):
                tok = int(torch.argmax(logits[-1]))
                ops.reset_pass()
                logits = llama.forward([tok], cache, pos)
                pos += 1
    return ops
