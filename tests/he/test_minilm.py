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


@pytest.mark.slow
@pytest.mark.timeout(1200)  # ~1.8 min alone, 4.9 min measured at load 6-8: room to spare
def test_minilm_embeddings_under_he_match_plain(minilm):
    """The fidelity subset of `privinfer bench he-fidelity`: the whole 6-layer model on one short
    sentence (8-token packing), cosine to plaintext and its similarity to another sentence.

    One sentence under HE, not two: each costs the same whole-model run (half the test), and the
    other sentence's embedding can be plaintext, since what is checked is that the HE embedding
    keeps its similarities. Its distance to the plaintext embedding bounds its similarity error
    against every unit vector (measured 2.7e-4)."""
    text, other = "Bees collect nectar.", "Honey bees gather nectar."
    plain, plain_other = minilm.embed([text, other])
    ops = HeOps(ranges=minilm_ranges())
    bert = minilm.build(ops)
    got = ops.reveal(bert.encode(minilm.token_ids(text)))[0]
    cos = torch.nn.functional.cosine_similarity(got, plain, dim=0)
    assert cos.item() > 0.999, cos
    assert abs((got @ plain_other).item() - (plain @ plain_other).item()) < 1e-3
    assert (got - plain).norm().item() < 2e-3
    assert ops.keyholder.client.check_total is not None
