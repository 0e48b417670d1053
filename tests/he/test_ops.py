import numpy as np
import pytest
import torch

from privinfer.engines.plain import PlainOps
from privinfer.errors import InputError
from privinfer.he.ops import HeOps, HeRanges, planned_steps
from privinfer.models.bert import Bert
from privinfer.models.config import BertConfig


def _tiny_bert(seed: int = 0):
    cfg = BertConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, n_layers=1, n_heads=2, max_positions=16
    )
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=1.0):
        return torch.randn(*shape, generator=g) * s

    h, f = cfg.hidden_size, cfg.intermediate_size
    w = {
        "embeddings.word_embeddings.weight": r(cfg.vocab_size, h, s=0.6),
        "embeddings.position_embeddings.weight": r(cfg.max_positions, h, s=0.3),
        "embeddings.token_type_embeddings.weight": r(2, h, s=0.1),
        "embeddings.LayerNorm.weight": 1 + r(h, s=0.1),
        "embeddings.LayerNorm.bias": r(h, s=0.1),
    }
    p = "encoder.layer.0."
    for name, shape, s in [
        ("attention.self.query", (h, h), 0.5 / h**0.5),
        ("attention.self.key", (h, h), 0.5 / h**0.5),
        ("attention.self.value", (h, h), 1 / h**0.5),
        ("attention.output.dense", (h, h), 1 / h**0.5),
        ("intermediate.dense", (f, h), 1 / h**0.5),
        ("output.dense", (h, f), 1 / f**0.5),
    ]:
        w[p + name + ".weight"] = r(*shape, s=s)
        w[p + name + ".bias"] = r(shape[0], s=0.05)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        w[p + ln + ".weight"] = 1 + r(h, s=0.1)
        w[p + ln + ".bias"] = r(h, s=0.1)
    return cfg, w


def test_he_bert_matches_plain_engine():
    cfg, weights = _tiny_bert()
    ids = [1, 7, 23, 5]
    plain = Bert(cfg, weights, PlainOps()).encode(ids)
    ops = HeOps(ranges=HeRanges(score_abs=(4.0,)))
    model = Bert(cfg, weights, ops)
    got = ops.reveal(model.encode(ids))
    assert got.shape == plain.shape
    assert torch.abs(got - plain).max() < 5e-3
    cos = torch.nn.functional.cosine_similarity(got, plain).item()
    assert cos > 0.999
    costs = ops.costs().to_dict()
    assert costs["attention"]["refreshes"] >= 1 and costs["linear"]["calls"] == 6
    assert ops.refresher.stats.rounds == ops.costs().total().rounds
    # one key batch covered the whole pass (token sums use +1, not 2, 4, .., T / 2)
    assert ops.ctx.galois_steps == planned_steps(ops.ctx.params.slots, 4)
    assert 2 not in ops.ctx.galois_steps and len(ops.ctx.galois_steps) == 1 + 11 + 6


def test_decoder_needs_a_fixed_packing_and_ids_stay_in_vocabulary():
    ops = HeOps()
    with pytest.raises(InputError, match="context_tokens"):
        ops.new_cache(2)
    with pytest.raises(InputError, match="vocabulary"):
        ops.embed(ops.prepare("t", torch.zeros(4, 8), kind="embedding"), [9])
    assert np.allclose(ops.reveal(np.ones((1, 2))).numpy(), 1.0)
    assert not ops.ctx.has_secret_key  # the server side holds public keys only
