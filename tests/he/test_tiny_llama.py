"""Generation under HE: a tiny random LLaMA picks the same greedy tokens as the plain engine."""

import torch

from privinfer.engines.plain import PlainOps
from privinfer.he.calibrate import calibrate_decoder
from privinfer.he.ckks import PARAMS_16384
from privinfer.he.ops import HeOps
from privinfer.he.ranges import HeRanges
from privinfer.he.server import generation_session
from privinfer.he.session import HeClient, LocalKeyHolder
from privinfer.models.generate import GenerationStats, generate_ids
from privinfer.models.llama import Llama
from privinfer.models.ops import Sampler
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights

PROMPT = [256, 87, 104]


class _Model:
    def __init__(self, cfg, weights):
        self.cfg, self.weights = cfg, weights

    def build(self, ops):
        return Llama(self.cfg, self.weights, ops)


def test_tiny_llama_greedy_tokens_match_plain_under_he():
    cfg = tiny_llama_config()
    weights = tiny_llama_weights(cfg, seed=3)
    plain = list(
        generate_ids(
            Llama(cfg, weights, PlainOps()),
            PROMPT,
            sampler=Sampler(),
            max_new_tokens=2,
            stop_ids=(),
            stats=GenerationStats(),
        )
    )
    model = _Model(cfg, weights)
    rec = calibrate_decoder(model, [PROMPT, [256, 1, 2]], new_tokens=2)
    client = HeClient.create(PARAMS_16384, max_new_tokens=2)
    ops = HeOps(
        keyholder=LocalKeyHolder(client), ranges=HeRanges.from_calibration(rec), context_tokens=4
    )
    for _ in generation_session(model, ops, PROMPT, 2):
        pass
    assert client.chosen == plain
    assert ops.refresher.stats.rounds > 0 and client.check_total is not None
    costs = ops.costs().to_dict()
    assert costs["rope"]["calls"] >= 4 and costs["cache"]["calls"] >= 4
    assert not ops.ctx.has_secret_key and torch.is_tensor(torch.zeros(1))
