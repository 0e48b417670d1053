"""A party's view (every payload it receives) is statistically independent of the secret.

For two different secrets, shared by an outside client, the three parties run square, compare
and reciprocal (which exercises sharing, resharing, truncation, a2b, suffix-OR and bit
injection). For each party we pool every payload it received and compare the histograms of the lowest and
the highest byte of each 64-bit word under the two secrets with a two-sample chi-square test
(255 degrees of freedom). Six tests (3 parties x 2 bytes) at family-wise significance level
1e-3 (Bonferroni: 1.67e-4 each); keys are fixed, so the test is deterministic, not flaky.
"""

from __future__ import annotations

import torch
from tests.views import RecordingLink

from privinfer.mpc.prf import PairwiseRandomness
from privinfer.mpc.protocols import arith, compare, nonlinear
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import accept_client_share, client_make_shares
from privinfer.net.memory import MemoryNetwork, run_threads

CHI2_CRIT_255_DOF_1E3 = 330.52  # scipy.stats.chi2.ppf(1 - 1e-3, 255)
CHI2_CRIT_255_DOF_BONFERRONI_6 = 344.04  # scipy.stats.chi2.ppf(1 - 1e-3 / 6, 255)
N = 4096


def _views(secret: float, seed: int) -> list[list[bytes]]:
    keys = [bytes([seed, k]) * 8 for k in range(3)]
    payloads = client_make_shares(torch.full((N,), secret, dtype=torch.float64), 16)
    net = MemoryNetwork(3, timeout_s=30)
    links = [RecordingLink(link) for link in net.links]

    def make(i: int):  # type: ignore[no-untyped-def]
        def body() -> None:
            p = Party(links[i], PairwiseRandomness.buffered(keys[(i - 1) % 3], keys[i]), 16)
            x = accept_client_share(p, payloads[i], (N,))
            sq = arith.square(p, x)
            compare.ltz(p, x)
            nonlinear.reciprocal(p, sq.add_public(1.0))

        return body

    run_threads([make(i) for i in range(3)])
    return [link.view for link in links]


def _byte_hist(payload: bytes, which: int) -> torch.Tensor:
    words = torch.frombuffer(bytearray(payload), dtype=torch.int64)
    byte = (words >> (8 * which)) & 0xFF
    return torch.bincount(byte, minlength=256).double()


def chi2_two_sample(h1: torch.Tensor, h2: torch.Tensor) -> float:
    """Chi-square statistic of homogeneity for two histograms over the same bins."""
    n1, n2 = h1.sum(), h2.sum()
    tot = h1 + h2
    keep = tot > 0
    e1, e2 = tot * n1 / (n1 + n2), tot * n2 / (n1 + n2)
    stat = ((h1 - e1) ** 2 / e1 + (h2 - e2) ** 2 / e2)[keep].sum()
    return float(stat)


def test_views_do_not_depend_on_the_secret():
    views_a = _views(-3.0, seed=1)
    views_b = _views(2.0e4, seed=2)
    for party in range(3):
        assert [len(m) for m in views_a[party]] == [len(m) for m in views_b[party]]
        pooled_a = b"".join(views_a[party])
        pooled_b = b"".join(views_b[party])
        n_words = len(pooled_a) // 8
        assert n_words > 50 * N  # the view is substantial (tens of messages of N words)
        for which in (0, 7):
            stat = chi2_two_sample(_byte_hist(pooled_a, which), _byte_hist(pooled_b, which))
            assert stat < CHI2_CRIT_255_DOF_BONFERRONI_6, (party, which)


def test_detector_catches_a_leak():
    # The same statistic flags an unmasked share: x_0 + small noise reveals the secret's scale.
    g = torch.Generator().manual_seed(0)
    leak_a = torch.round((-3.0 + torch.rand(N, generator=g)) * 2**16).to(torch.int64)
    leak_b = torch.round((2.0e4 + torch.rand(N, generator=g)) * 2**16).to(torch.int64)
    stat = chi2_two_sample(
        _byte_hist(leak_a.numpy().tobytes(), 7), _byte_hist(leak_b.numpy().tobytes(), 7)
    )
    assert stat > CHI2_CRIT_255_DOF_1E3
