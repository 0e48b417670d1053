"""MpcOps runs the tiny LLaMA like the plain engine: logits and greedy tokens."""

from __future__ import annotations

import pytest
import torch
from tests.mpc.helpers import KEYS

from privinfer.engines.plain import PlainOps
from privinfer.models.generate import GenerationStats, generate_ids
from privinfer.models.llama import Llama
from privinfer.models.ops import Sampler
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights
from privinfer.mpc.client import LocalClient
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.runtime import run_local

PROMPT = [256, 72, 105, 33, 10, 200, 3, 77]


@pytest.mark.parametrize("private_weights", [True, False])
def test_tiny_llama_logits_match_plain(private_weights):
    cfg = tiny_llama_config()
    weights = tiny_llama_weights(cfg, seed=3)
    plain = Llama(cfg, weights, PlainOps())
    ref = plain.forward(PROMPT, plain.new_cache(), 0).double()
    client = LocalClient(16)

    def program(p):
        ops = MpcOps(p, client, private_weights=private_weights)
        model = Llama(cfg, weights, ops)
        cache = model.new_cache()
        logits = ops.reveal(model.forward(PROMPT, cache, 0))
        step = ops.reveal(model.forward([65], cache, len(PROMPT)))
        return logits, step, ops.costs()

    out = run_local(program, keys=KEYS, timeout_s=60)
    logits, step, costs = out[0]
    assert (logits.double() - ref).abs().max() < 0.02
    cache = plain.new_cache()
    plain.forward(PROMPT, cache, 0)
    ref_step = plain.forward([65], cache, len(PROMPT)).double()
    assert (step.double() - ref_step).abs().max() < 0.02
    assert costs.by_op["attention"].rounds > 0 and costs.by_op["linear"].bytes_sent > 0


def test_tiny_llama_greedy_generation_matches_plain():
    cfg = tiny_llama_config()
    weights = tiny_llama_weights(cfg, seed=5)
    greedy = Sampler()
    plain = Llama(cfg, weights, PlainOps())
    want = list(
        generate_ids(
            plain, PROMPT, sampler=greedy, max_new_tokens=4, stop_ids=[], stats=GenerationStats()
        )
    )
    client = LocalClient(16)

    def program(p):
        model = Llama(cfg, weights, MpcOps(p, client))
        return list(
            generate_ids(
                model,
                PROMPT,
                sampler=greedy,
                max_new_tokens=4,
                stop_ids=[],
                stats=GenerationStats(),
            )
        )

    got = run_local(program, keys=KEYS, timeout_s=60)
    assert got[0] == got[1] == got[2] == want


def _tiny_bert():
    from privinfer.models.config import BertConfig

    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        n_layers=2,
        n_heads=4,
        max_positions=32,
    )
    g = torch.Generator().manual_seed(7)
    h, f = cfg.hidden_size, cfg.intermediate_size
    w = {
        "embeddings.word_embeddings.weight": torch.randn(cfg.vocab_size, h, generator=g),
        "embeddings.position_embeddings.weight": torch.randn(32, h, generator=g) * 0.1,
        "embeddings.token_type_embeddings.weight": torch.randn(2, h, generator=g) * 0.1,
        "embeddings.LayerNorm.weight": 1 + 0.1 * torch.randn(h, generator=g),
        "embeddings.LayerNorm.bias": 0.1 * torch.randn(h, generator=g),
    }
    shapes = {
        "attention.self.query": (h, h),
        "attention.self.key": (h, h),
        "attention.self.value": (h, h),
        "attention.output.dense": (h, h),
        "intermediate.dense": (f, h),
        "output.dense": (h, f),
    }
    for i in range(cfg.n_layers):
        p = f"encoder.layer.{i}."
        for name, (o, n) in shapes.items():
            w[p + name + ".weight"] = torch.randn(o, n, generator=g) / n**0.5
            w[p + name + ".bias"] = 0.1 * torch.randn(o, generator=g)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + ln + ".weight"] = 1 + 0.1 * torch.randn(h, generator=g)
            w[p + ln + ".bias"] = 0.1 * torch.randn(h, generator=g)
    return cfg, w


def test_tiny_bert_embedding_matches_plain():
    from privinfer.models.bert import Bert

    cfg, weights = _tiny_bert()
    ids = [1, 17, 42, 99, 5, 2]
    plain = Bert(cfg, weights, PlainOps())
    ref = plain.encode(ids).double()
    client = LocalClient(16)

    def program(p):
        ops = MpcOps(p, client)
        return ops.reveal(Bert(cfg, weights, ops).encode(ids))

    got = run_local(program, keys=KEYS, timeout_s=60)[0].double()
    assert (got - ref).abs().max() < 2e-3
    assert abs(got.norm() - 1.0) < 2e-3
