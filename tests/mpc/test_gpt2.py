"""The GPT-2 definition matches a hand-written float64 torch GPT-2, on the plain engine and under
MPC (three in-process parties, private weights), prefill and a cached decode step."""

from __future__ import annotations

from tests.mpc.helpers import KEYS

from privinfer.engines.plain import PlainOps
from privinfer.models.gpt2 import GPT2, GPT2Config, gpt2_reference_logits, random_gpt2_weights
from privinfer.mpc.client import LocalClient
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.runtime import run_local

CFG = GPT2Config(vocab_size=61, hidden_size=32, n_layers=2, n_heads=2, max_positions=16)
IDS = [3, 17, 42, 5, 60, 0]


def test_plain_gpt2_matches_reference():
    w = random_gpt2_weights(CFG, seed=1)
    model = GPT2(CFG, w, PlainOps())
    ref = gpt2_reference_logits(CFG, w, IDS + [9])
    cache = model.new_cache()
    got = model.forward(IDS, cache, 0).double()
    assert (got[-1] - ref[len(IDS) - 1]).abs().max() < 1e-4
    step = model.forward([9], cache, len(IDS)).double()
    assert (step[-1] - ref[-1]).abs().max() < 1e-4
    assert ref.std() > 0.05  # the check is not vacuous


def test_mpc_gpt2_matches_reference():
    w = random_gpt2_weights(CFG, seed=2)
    w["h.0.fc.w"] *= 40  # push GeLU inputs well past its polynomial pieces
    ref = gpt2_reference_logits(CFG, w, IDS + [9])
    client = LocalClient(16)

    def program(p):
        ops = MpcOps(p, client, private_weights=True)
        model = GPT2(CFG, w, ops)
        cache = model.new_cache()
        first = ops.reveal(model.forward(IDS, cache, 0))
        step = ops.reveal(model.forward([9], cache, len(IDS)))
        return first, step

    first, step = run_local(program, keys=KEYS, timeout_s=60)[0]
    assert (first[-1].double() - ref[len(IDS) - 1]).abs().max() < 0.01
    assert (step[-1].double() - ref[-1]).abs().max() < 0.01
