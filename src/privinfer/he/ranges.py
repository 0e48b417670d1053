"""Public input ranges for the HE approximations, per call index, from a public calibration.

Security assumption: ranges describe the model on public calibration text (see `he.calibrate`);
they are public parameters of the protocol. Inputs beyond them are caught by the range checks
(`he.nonlinear.CheckAccumulator`), never silently accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Pair = tuple[float, float]


@dataclass(frozen=True)
class HeRanges:
    """Per-call ranges (index i of a forward pass; the last entry repeats for later calls).

    norm_var: LayerNorm variance / RMSNorm mean square (+eps) of every row but position 0;
    norm_first: the same for the row at position 0, where it differs (empty: as norm_var);
    score_abs: max |attention score|; act: GELU / SiLU input range; pooled_norm_sq: squared
    norm of the mean-pooled vector.

    Why position 0 apart: decoders park "massive activations" (attention sinks) on the first
    token. SmolLM2-135M's RMSNorm mean square at position 0 is 6e5..1.3e6 from layer 12 on,
    at every other position 17..1,500: one range over both spans 1e5, which no 1/sqrt plan
    covers; two ranges, each a few hundred wide, are mapped onto one (`norm_plan`).
    """

    norm_var: tuple[Pair, ...] = ((1.0 / 64, 16.0),)
    score_abs: tuple[float, ...] = (8.0,)
    act: tuple[Pair, ...] = ((-8.0, 8.0),)
    pooled_norm_sq: Pair = (1.0 / 16, 64.0)
    norm_first: tuple[Pair, ...] = ()

    @staticmethod
    def at(seq: tuple, index: int):
        return seq[min(index, len(seq) - 1)]

    def norm_plan(self, index: int) -> tuple[float, float, float]:
        """(lo, hi, first_scale) for norm call `index`: the position-0 row's mean square is
        multiplied by the public `first_scale`, which maps its range onto the geometric centre
        of the other rows' range; [lo, hi] covers both. 1/sqrt of the scaled value times the
        row scaled by sqrt(first_scale) is the row's norm (`NonlinearMixin._norm`)."""
        lo, hi = self.at(self.norm_var, index)
        if not self.norm_first:
            return lo, hi, 1.0
        flo, fhi = self.at(self.norm_first, index)
        s = math.sqrt(lo * hi / (flo * fhi))
        return min(lo, flo * s), max(hi, fhi * s), s

    def norm_plans(self) -> list[tuple[float, float, float]]:
        """Every norm call's plan (planned when a session starts)."""
        return [self.norm_plan(i) for i in range(max(len(self.norm_var), len(self.norm_first)))]

    @classmethod
    def from_calibration(
        cls,
        rec,
        *,
        norm_margin: float = 2.0,
        score_margin: float = 1.5,
        act_margin: float = 1.25,
    ) -> HeRanges:
        """Widen recorded ranges (`he.calibrate.RecordingOps`): norms x/÷ norm_margin, scores
        x score_margin, activation ranges about their centre by act_margin."""

        def widen(lo: float, hi: float) -> Pair:
            c, h = (lo + hi) / 2, (hi - lo) / 2 * act_margin
            return (round(c - h, 4), round(c + h, 4))

        norms = (
            tuple((lo / norm_margin, hi * norm_margin) for lo, hi in rec.norm_var.pairs())
            or cls.norm_var
        )
        first = tuple((lo / norm_margin, hi * norm_margin) for lo, hi in rec.norm_first.pairs())
        scores = tuple(hi * score_margin for _, hi in rec.score_abs.pairs()) or cls.score_abs
        acts = tuple(widen(lo, hi) for lo, hi in rec.act_in.pairs()) or cls.act
        pooled = rec.pooled_norm_sq.pairs()
        pool = (pooled[0][0] / norm_margin, pooled[0][1] * norm_margin) if pooled else (1 / 16, 64)
        return cls(norms, scores, acts, pool, first)


# MiniLM-L6 (all-MiniLM-L6-v2) on the 20 sentences of `he.calibrate.SENTENCES` (9-14 tokens),
# measured in plaintext. Norm variance per LayerNorm (the first runs on the client):
#   [0.0037, 0.029] [0.153, 0.442] [0.409, 129.2] [0.174, 0.59] [0.476, 38.2] [0.169, 0.646]
#   [0.487, 95.4] [0.247, 0.564] [0.468, 15.9] [0.270, 0.612] [0.402, 13.0] [0.177, 0.948]
#   [0.270, 1.97]; max |score| per layer 30.7 13.1 8.9 7.3 9.6 7.5; GELU inputs per layer
#   [-17.2, 24.6] [-13.5, 20.4] [-10.4, 17.5] [-10.7, 13.7] [-9.3, 5.5] [-6.7, 3.4];
#   pooled norm^2 [25.6, 41.4]. MINILM_RANGES applies the default margins of from_calibration.
_MINILM_NORM = (
    (0.0037, 0.029), (0.153, 0.442), (0.409, 129.2), (0.174, 0.59), (0.476, 38.2),
    (0.169, 0.646), (0.487, 95.4), (0.247, 0.564), (0.468, 15.9), (0.270, 0.612),
    (0.402, 13.0), (0.177, 0.948), (0.270, 1.97),
)  # fmt: skip
_MINILM_ACT = ((-17.2, 24.6), (-13.5, 20.4), (-10.4, 17.5), (-10.7, 13.7), (-9.3, 5.5), (-6.7, 3.4))
_MINILM_SCORES = (30.7, 13.1, 8.9, 7.3, 9.6, 7.5)


def minilm_ranges() -> HeRanges:
    """The MiniLM-L6 calibration above with from_calibration's default margins."""
    from privinfer.he.calibrate import CallRanges, RecordingOps

    rec = RecordingOps.__new__(RecordingOps)
    rec.norm_var, rec.score_abs, rec.act_in, rec.pooled_norm_sq, rec.norm_first = (
        CallRanges() for _ in range(5)
    )  # MiniLM's norm ranges cover every row (no position-0 split)
    for i, (lo, hi) in enumerate(_MINILM_NORM):
        rec.norm_var.record(i, lo, hi)
    for i, (lo, hi) in enumerate(_MINILM_ACT):
        rec.act_in.record(i, lo, hi)
    for i, hi in enumerate(_MINILM_SCORES):
        rec.score_abs.record(i, 0.0, hi)
    rec.pooled_norm_sq.record(0, 25.6, 41.4)
    return HeRanges.from_calibration(rec)
