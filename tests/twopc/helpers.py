"""Helpers for the two-party tests: recording links and the two-sample chi-square statistic."""

from __future__ import annotations

import numpy as np
from tests.views import RecordingLink  # noqa: F401 - re-exported for the twopc tests

CHI2_CRIT_255_DOF_1E3 = 330.52  # scipy.stats.chi2.ppf(1 - 1e-3, 255)
CHI2_CRIT_255_DOF_1E3_OVER_4 = 338.77  # scipy.stats.chi2.ppf(1 - 1e-3 / 4, 255)


def byte_hist(payload: bytes) -> np.ndarray:
    return np.bincount(np.frombuffer(payload, np.uint8), minlength=256).astype(np.float64)


def chi2_two_sample(h1: np.ndarray, h2: np.ndarray) -> float:
    """Chi-square statistic of homogeneity for two histograms over the same bins."""
    n1, n2 = h1.sum(), h2.sum()
    tot = h1 + h2
    keep = tot > 0
    e1, e2 = (tot * n1 / (n1 + n2))[keep], (tot * n2 / (n1 + n2))[keep]
    return float(((h1[keep] - e1) ** 2 / e1 + (h2[keep] - e2) ** 2 / e2).sum())
