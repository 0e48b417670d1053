"""Helpers for the two-party tests: recording links and the two-sample chi-square statistic."""

from __future__ import annotations

import numpy as np

CHI2_CRIT_255_DOF_1E3 = 330.52  # scipy.stats.chi2.ppf(1 - 1e-3, 255)
CHI2_CRIT_255_DOF_1E3_OVER_4 = 338.77  # scipy.stats.chi2.ppf(1 - 1e-3 / 4, 255)


class RecordingLink:
    """Wraps a PeerLink and keeps every payload this party receives (its view)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.party_id = inner.party_id
        self.n_parties = inner.n_parties
        self.stats = inner.stats
        self.view: list[bytes] = []

    def send(self, peer: int, payload: bytes) -> None:
        self.inner.send(peer, payload)

    def recv(self, peer: int) -> bytes:
        got = self.inner.recv(peer)
        self.view.append(got)
        return got

    def round(self, outgoing, expect_from):  # type: ignore[no-untyped-def]
        got = self.inner.round(outgoing, expect_from)
        self.view.extend(got[p] for p in sorted(got))
        return got

    def close(self) -> None:
        self.inner.close()


def byte_hist(payload: bytes) -> np.ndarray:
    return np.bincount(np.frombuffer(payload, np.uint8), minlength=256).astype(np.float64)


def chi2_two_sample(h1: np.ndarray, h2: np.ndarray) -> float:
    """Chi-square statistic of homogeneity for two histograms over the same bins."""
    n1, n2 = h1.sum(), h2.sum()
    tot = h1 + h2
    keep = tot > 0
    e1, e2 = (tot * n1 / (n1 + n2))[keep], (tot * n2 / (n1 + n2))[keep]
    return float(((h1[keep] - e1) ** 2 / e1 + (h2[keep] - e2) ** 2 / e2).sum())
