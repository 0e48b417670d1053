"""Real MiniLM weights under HE: the calibrated ranges reach plaintext fidelity (first layer)."""

import dataclasses

import pytest
import torch

from privinfer.engines.plain import PlainOps
from privinfer.he.nonlinear import plan_activation, plan_rsqrt, squarings_for
from privinfer.he.ops import HeOps
from privinfer.he.ranges import minilm_ranges
from privinfer.models.bert import Bert


@pytest.fixture(scope="module")
def minilm():
    import privinfer

    try:
        return privinfer.load("minilm-l6")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"MiniLM not installed ({type(exc).__name__})")


def test_minilm_ranges_have_accurate_plans():
    r = minilm_ranges()
    for lo, hi in r.norm_var:
        _, _, err = plan_rsqrt(lo, hi)
        assert err <= 1e-5
    for lo, hi in r.act:
        assert plan_activation("gelu", lo, hi).max_abs_error <= 2e-3
    assert squarings_for(max(r.score_abs)) == 5  # |s| <= 46 -> exp(s / 32) on [-2, 2]


def test_minilm_first_layer_matches_plain(minilm):
    cfg = dataclasses.replace(minilm.cfg, n_layers=1, normalize=False)
    ids = minilm.token_ids("Bees collect nectar.")
    plain = Bert(cfg, minilm.weights, PlainOps()).encode(ids)
    ops = HeOps(ranges=minilm_ranges())
    got = ops.reveal(Bert(cfg, minilm.weights, ops).encode(ids))
    cos = torch.nn.functional.cosine_similarity(got, plain).item()
    assert cos > 0.999, cos
    assert ops.keyholder.client.check_total is not None
