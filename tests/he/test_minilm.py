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


LAYERS = 2  # of MiniLM's 6: real weights and the calibrated ranges of the first calls


@pytest.mark.timeout(900)  # ~45 s alone; the whole model took ~2.6 min at load 3.6
def test_minilm_embeddings_under_he_match_plain(minilm):
    """Real MiniLM weights under HE with the calibrated per-call ranges, on the model's first
    two layers (the ranges are indexed by call, so a prefix of the model uses the prefix of
    its ranges): cosine to the plaintext run of the same layers and its similarity to another
    sentence. The whole 6-layer model is measured by `privinfer bench he-fidelity` (min cosine
    and nearest neighbours over 20 sentences, README table); two layers here keep the suite's
    time while every op kind of the encoder (embedding and layer norms, attention, GELU, mean
    pooling, the range check) runs on real weights and values."""
    from dataclasses import replace

    from privinfer.engines.plain import PlainOps
    from privinfer.models.bert import Bert

    cfg = replace(minilm.cfg, n_layers=LAYERS)
    text, other = "Bees collect nectar.", "Honey bees gather nectar."
    plain_model = Bert(cfg, minilm.weights, PlainOps())
    plain, plain_other = (
        PlainOps().reveal(plain_model.encode(minilm.token_ids(t)))[0] for t in (text, other)
    )
    ops = HeOps(ranges=minilm_ranges())
    got = ops.reveal(Bert(cfg, minilm.weights, ops).encode(minilm.token_ids(text)))[0]
    cos = torch.nn.functional.cosine_similarity(got, plain, dim=0)
    assert cos.item() > 0.999, cos
    assert abs((got @ plain_other).item() - (plain @ plain_other).item()) < 1e-3
    assert (got - plain).norm().item() < 2e-3
    assert ops.keyholder.client.check_total is not None
