"""Llama.forward_batch on the tiny model: one decode step of sequences with caches of different
lengths (joining and leaving between steps) gives each sequence its solo logits and tokens."""

from __future__ import annotations

import torch

from privinfer.engines.plain import PlainOps
from privinfer.models.llama import Llama
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights


def test_forward_batch_matches_solo_with_ragged_caches():
    cfg = tiny_llama_config()
    m = Llama(cfg, tiny_llama_weights(cfg), PlainOps())
    prompts = [[256, *range(40, 40 + n)] for n in (1, 5, 17, 40)]
    steps = 10
    with torch.inference_mode():
        solo_tokens, solo_logits = [], []
        for ids in prompts:
            cache = m.new_cache()
            logits = m.forward(ids, cache, 0)[-1]
            toks, rows = [int(logits.argmax())], []
            for s in range(steps):
                logits = m.forward([toks[-1]], cache, len(ids) + s)[-1]
                rows.append(logits)
                toks.append(int(logits.argmax()))
            solo_tokens.append(toks)
            solo_logits.append(rows)
        # batched: sequence j joins at round j and leaves after its last step, so the batch
        # grows, holds all four, then shrinks
        caches = [m.new_cache() for _ in prompts]
        toks = [
            [int(m.forward(ids, c, 0)[-1].argmax())] for ids, c in zip(prompts, caches, strict=True)
        ]
        max_diff = 0.0
        for t in range(steps + len(prompts)):
            live = [j for j in range(len(prompts)) if j <= t and len(toks[j]) <= steps]
            if not live:
                continue
            out = m.forward_batch(
                [([toks[j][-1]], caches[j], len(prompts[j]) + len(toks[j]) - 1) for j in live]
            )
            assert out.shape == (len(live), cfg.vocab_size)
            for row, j in zip(out, live, strict=True):
                ref = solo_logits[j][len(toks[j]) - 1]
                max_diff = max(max_diff, (row - ref).abs().max().item())
                toks[j].append(int(row.argmax()))
    assert toks == solo_tokens
    assert max_diff < 1e-4, max_diff  # float reassociation in the stacked matmuls only


def test_forward_batch_mixes_prefills_with_decode_steps():
    cfg = tiny_llama_config()
    m = Llama(cfg, tiny_llama_weights(cfg), PlainOps())
    a, b, c = [256, 70, 71, 72], [256, *range(80, 99)], [256, 33]
    with torch.inference_mode():
        solo = [m.forward(ids, m.new_cache(), 0)[-1] for ids in (a, b, c)]
        ca = m.new_cache()
        m.forward(a[:-1], ca, 0)  # a decodes its last token while b and c prefill
        out = m.forward_batch(
            [(a[-1:], ca, len(a) - 1), (b, m.new_cache(), 0), (c, m.new_cache(), 0)]
        )
    for row, ref in zip(out, solo, strict=True):
        assert (row - ref).abs().max().item() < 1e-4
        assert int(row.argmax()) == int(ref.argmax())
