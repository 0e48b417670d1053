"""Count, per op class, the elements a private engine would truncate and the largest magnitude
they reach, by running the model definition on the plain engine (public shapes, real values).

Used by the security report to turn a per-element truncation bound into per-token figures.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from privinfer.engines.plain import PlainOps

# For norms the quantity that must not wrap is each row's sum of squares (after prescaling).
NORM_INPUT = "norm input, row sum of squares"


@dataclass
class OpTally:
    elements: int = 0
    max_abs: float = 0.0


@dataclass
class Tally:
    by_op: dict[str, OpTally] = field(default_factory=lambda: defaultdict(OpTally))

    def note(self, op: str, t: torch.Tensor, elements: int | None = None) -> None:
        s = self.by_op[op]
        s.elements += int(t.numel() if elements is None else elements)
        if t.numel():
            s.max_abs = max(s.max_abs, float(t.detach().abs().max()))


class CountingOps(PlainOps):
    """PlainOps that tallies the outputs of every op a fixed-point engine must truncate."""

    name = "plain-counting"

    def __init__(self) -> None:
        super().__init__()
        self.tally = Tally()

    def linear(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = super().linear(x, w, b)
        self.tally.note("linear", y)
        return y

    def linears(self, x: torch.Tensor, ws: Any) -> list[torch.Tensor]:
        return [self.linear(x, w, b) for w, b in ws]

    def rms_norm(self, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        self.tally.note(NORM_INPUT, (x * x).sum(-1), elements=x.numel())
        y = super().rms_norm(x, w, eps)
        self.tally.note("norm output", y)
        return y

    def layer_norm(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float
    ) -> torch.Tensor:
        c = x - x.mean(-1, keepdim=True)
        self.tally.note(NORM_INPUT, (c * c).sum(-1), elements=x.numel())
        y = super().layer_norm(x, w, b, eps)
        self.tally.note("norm output", y)
        return y

    def swiglu(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        y = super().swiglu(gate, up)
        self.tally.note("activation", y)
        return y

    def gelu(self, x: torch.Tensor) -> torch.Tensor:
        y = super().gelu(x)
        self.tally.note("activation", y)
        return y

    def rope(self, x: torch.Tensor, positions: Any, **kw: Any) -> torch.Tensor:
        y = super().rope(x, positions, **kw)
        self.tally.note("rope", y)
        return y

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any
    ) -> torch.Tensor:
        t, s, h, d = q.shape[0], k.shape[0], kw["n_heads"], kw["head_dim"]
        scores = (
            torch.einsum(
                "thd,shd->hts",
                q.view(t, h, d),
                k.view(s, kw["n_kv_heads"], d).repeat_interleave(h // kw["n_kv_heads"], dim=1),
            )
            / d**0.5
        )
        self.tally.note("attention scores", scores)
        y = super().attention(q, k, v, **kw)
        self.tally.note("attention output", y)
        return y


def count_generation(lm: Any, prompt_ids: list[int], new_tokens: int = 1) -> tuple[Tally, Tally]:
    """Tallies for the prefill of `prompt_ids` and for one decode step after it."""
    ops = CountingOps()
    model = lm.build(ops)
    cache = model.new_cache()
    with torch.inference_mode():
        logits = model.forward(prompt_ids, cache, 0)
        prefill, ops.tally = ops.tally, Tally()
        tok = int(logits[-1].argmax())
        for i in range(new_tokens):
            tok = int(model.forward([tok], cache, len(prompt_ids) + i)[-1].argmax())
    return prefill, ops.tally
