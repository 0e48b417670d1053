"""The round-saving max/argmax paths (tournament then all pairs) stay exact, ties included."""

from __future__ import annotations

import torch
from tests.mpc.helpers import run3

from privinfer.mpc.protocols import compare


def test_tournament_then_all_pairs_is_exact(gen):
    x = torch.randn(2, 300, generator=gen, dtype=torch.float64) * 50
    x[0, 7] = x[0, 250] = 1e3  # tie across the tournament / all-pairs boundary
    x[1, 299] = 2e3  # odd tail element wins

    def fn(p, s):
        m, i = compare.argmax_lastdim(p, s[0])
        return compare.RShare.stack([m, i.with_f(16).mul_ring(1 << 16).with_f(16)])

    out, p = run3(fn, [x])
    assert (out[0] - x.max(-1).values).abs().max() <= 2**-16
    assert torch.equal(out[1].round().long(), x.argmax(-1))
    # 300 -> 150 -> 75 -> 38 by tournament (3 x 11 rounds), then all pairs of 38 (17 rounds)
    assert p.meter.totals()["argmax"].rounds == 3 * 11 + 17


def test_all_pairs_small_rows(gen):
    x = torch.randint(-3, 3, (5, 9, 2), generator=gen).double()  # many ties
    out, _ = run3(lambda p, s: compare.max_lastdim(p, s[0]), [x])
    assert torch.equal(out, x.max(-1).values)
