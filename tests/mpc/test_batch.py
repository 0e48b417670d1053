"""B sequences per protocol run (`mpc.batch.BatchedMpcOps` with `Llama.forward_batch`): on the
tiny LLaMA, three sequences of different lengths decoded together give plain's greedy tokens,
and a batched decode step takes the rounds of the slowest sequence's solo step, not the sum."""

from __future__ import annotations

from tests.mpc.helpers import KEYS

from privinfer.engines.plain import PlainOps
from privinfer.models.generate import GenerationStats, generate_ids
from privinfer.models.llama import Llama
from privinfer.models.ops import Sampler
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights
from privinfer.mpc.batch import BatchedMpcOps
from privinfer.mpc.client import LocalClient
from privinfer.mpc.runtime import run_local

PROMPTS = [[256, 72, 105, 33, 10], [7, 8], [200, 1, 2, 3, 4, 5, 6, 9, 12]]
STEPS = 3


def _batched(cfg, weights, prompts):
    """Greedy tokens of each prompt, decoded together, and the rounds of each decode step."""
    client = LocalClient(16)

    def program(p):
        ops = BatchedMpcOps(p, client)
        model = Llama(cfg, weights, ops)
        caches = [model.new_cache() for _ in prompts]
        toks = ops.next_tokens(
            model.forward_batch([(ids, c, 0) for ids, c in zip(prompts, caches, strict=True)]),
            Sampler(),
        )
        out, rounds = [[t] for t in toks], []
        for k in range(STEPS):
            before = p.link.stats.rounds
            steps = [
                ([o[-1]], c, len(ids) + k) for o, c, ids in zip(out, caches, prompts, strict=True)
            ]
            toks = ops.next_tokens(model.forward_batch(steps), Sampler())
            rounds.append(p.link.stats.rounds - before)
            for o, t in zip(out, toks, strict=True):
                o.append(t)
        return out, rounds

    return run_local(program, keys=KEYS, timeout_s=120)[0]


def test_batched_greedy_equals_plain_in_the_rounds_of_one_sequence():
    cfg = tiny_llama_config()
    weights = tiny_llama_weights(cfg, seed=5)
    plain = Llama(cfg, weights, PlainOps())
    want = [
        list(
            generate_ids(
                plain,
                ids,
                sampler=Sampler(),
                max_new_tokens=STEPS + 1,
                stop_ids=[],
                stats=GenerationStats(),
            )
        )
        for ids in PROMPTS
    ]
    got, rounds = _batched(cfg, weights, PROMPTS)
    assert got == want
    solo = [_batched(cfg, weights, [ids])[1] for ids in PROMPTS]
    for k in range(STEPS):
        slowest = max(s[k] for s in solo)
        assert rounds[k] == slowest, (rounds[k], [s[k] for s in solo])
        assert rounds[k] < sum(s[k] for s in solo)
