"""Real MiniLM weights under HE: the calibrated ranges reach plaintext fidelity."""

import pytest
import torch

from privinfer.he.nonlinear import plan_activation, plan_rsqrt, squarings_for
from privinfer.he.ops import HeOps
from privinfer.he.ranges import minilm_ranges


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
        assert plan_activation("gelu", lo, hi).max_abs_error <= 1e-5
    assert squarings_for(max(r.score_abs)) == 5  # |s| <= 46 -> exp(s / 32) on [-2, 2]


def test_minilm_embeddings_under_he_match_plain(minilm):
    """The fidelity subset of `privinfer bench he-fidelity`: the whole 6-layer model on two short
    sentences (8-token packing), cosine to plaintext and their similarity."""
    texts = ["Bees collect nectar.", "Honey bees gather nectar."]
    plain = minilm.embed(texts)
    ops = HeOps(ranges=minilm_ranges())
    bert = minilm.build(ops)
    got = torch.cat([ops.reveal(bert.encode(minilm.token_ids(t))) for t in texts])
    cos = torch.nn.functional.cosine_similarity(got, plain)
    assert cos.min().item() > 0.999, cos
    assert abs((got[0] @ got[1]).item() - (plain[0] @ plain[1]).item()) < 1e-3
    assert ops.keyholder.client.check_total is not None
