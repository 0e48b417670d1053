"""Approximation plans meet their stated errors; out-of-range inputs are detected, not returned."""

import numpy as np
import pytest
import torch

from privinfer.errors import SecurityError
from privinfer.he.nonlinear import plan_inverse, plan_rsqrt, squarings_for
from privinfer.he.ops import ClientRows, HeOps
from privinfer.he.ranges import HeRanges


def test_plans_reach_their_error_targets():
    for lo, hi in [(0.2, 260.0), (0.0765, 0.884), (12.8, 82.8)]:
        start, steps, err = plan_rsqrt(lo, hi)
        x = np.geomspace(lo, hi, 2001)
        y = start(x)
        for _ in range(steps):
            y = y * (1.5 - 0.5 * x * y * y)
        assert err <= 1e-5 and np.abs(y * np.sqrt(x) - 1).max() <= 1e-5
    assert plan_inverse(0.9, 17.6)[2] <= 1e-5
    assert squarings_for(46.0) == 5 and squarings_for(4.0) == 1


def test_softmax_by_normalised_squaring_matches_softmax_in_plaintext():
    s = np.array([-19.0, 3.0, 28.0, 27.5, 0.0])
    k = squarings_for(46.0)
    p = np.exp(s / 2**k)
    p = p / p.mean()
    for _ in range(k):
        p = p * p
        p = p / p.mean()
    assert np.allclose(p / p.size, np.exp(s - s.max()) / np.exp(s - s.max()).sum(), atol=1e-12)


@pytest.fixture(scope="module")
def ops():
    return HeOps(ranges=HeRanges(act=((-8.0, 8.0),)))


def _run(ops, values):
    x = ClientRows(2, 0, torch.as_tensor(values, dtype=torch.float64))
    return ops.reveal(ops.gelu(ops._enc(x)))


def test_in_range_inputs_pass_the_check(ops):
    vals = np.linspace(-7.5, 7.5, 16).reshape(2, 8)
    ops.embed(ops.prepare("t", torch.zeros(4, 8), kind="embedding"), [0])  # new pass
    got = _run(ops, vals)
    assert np.allclose(got.numpy(), torch.nn.functional.gelu(torch.as_tensor(vals)), atol=1e-3)


def test_out_of_range_inputs_are_detected(ops):
    vals = np.linspace(-7.5, 7.5, 16).reshape(2, 8)
    vals[1, 3] = 9.5  # 19% beyond the calibrated [-8, 8]
    ops.embed(ops.prepare("t", torch.zeros(4, 8), kind="embedding"), [0])
    with pytest.raises(SecurityError, match="calibrated range"):
        _run(ops, vals)


def test_unplannable_norm_range_fails_when_the_session_starts():
    """SmolLM2's calibrated RMSNorm range at layer 13 spans [10, 2.1e6]: no start polynomial
    converges there, and the error must come before any ciphertext work, not 12 layers in."""
    from privinfer.errors import InputError
    from privinfer.he.ops import HeOps
    from privinfer.he.ranges import HeRanges

    with pytest.raises(InputError, match="No 1/x or 1/sqrt plan"):
        HeOps(ranges=HeRanges(norm_var=((1.0, 16.0), (10.1253, 2.11302e6))))


def test_norm_plan_maps_position_zero_onto_the_other_rows_range():
    r = HeRanges(norm_var=((8.0, 190.0),), norm_first=((3.2e5, 2.6e6),))
    lo, hi, s = r.norm_plan(0)
    assert (lo, hi) == (8.0, 190.0)  # the mapped row-0 range [14, 110] sits inside
    assert 3.2e5 * s >= lo and 2.6e6 * s <= hi
    assert HeRanges(norm_var=((8.0, 190.0),)).norm_plan(3) == (8.0, 190.0, 1.0)


def test_calibration_records_position_zero_apart():
    from privinfer.he.calibrate import RecordingOps

    rec = RecordingOps()
    x = torch.ones(3, 4)
    x[0, 1] = 1000.0
    w = torch.ones(4)
    rec.reset_pass(first_row=True)
    rec.rms_norm(x, w, 0.0)
    rec.reset_pass(first_row=False)  # a decode step: its row is not position 0
    rec.rms_norm(x[1:2] * 2, w, 0.0)
    assert rec.norm_first.pairs() == [(250000.75, 250000.75)]
    assert rec.norm_var.pairs() == [(1.0, 4.0)]


def test_massive_activation_at_position_zero_normalises_under_he():
    """SmolLM2 keeps |x| ~ 2.4e4 in a few channels of position 0 (mean square ~1e6) while
    other rows stay near 10..1e3: with the position-0 range apart, RMSNorm matches plaintext."""
    ops = HeOps(ranges=HeRanges(norm_var=((8.0, 190.0),), norm_first=((3.2e5, 2.6e6),)))
    rng = np.random.default_rng(0)
    vals = rng.normal(0, 4.0, (3, 64))
    vals[0, 3] = 11000.0  # mean square 1.9e6
    vals[2, 5] = 40.0
    ops.embed(ops.prepare("t", torch.zeros(4, 64), kind="embedding"), [0])
    x = ClientRows(3, 0, torch.as_tensor(vals))
    w = ops.prepare("w", torch.ones(64), kind="norm")
    got = ops.reveal(ops.rms_norm(ops._enc(x), w, 1e-5)).double()
    want = torch.as_tensor(vals) / torch.sqrt(torch.as_tensor((vals**2).mean(1, keepdims=True)))
    assert float((got - want).abs().max()) < 3e-3
