"""The plain engine's SmolLM2 against transformers' LlamaForCausalLM from the same GGUF."""

from __future__ import annotations

import pytest
import torch

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why 1 is not prime.",
]


@pytest.fixture(scope="module")
def hf_smollm(smollm):
    """transformers' own LlamaForCausalLM loaded from the same GGUF file (the reference).

    Module-scoped: this module is its only user, so its float32 copy of SmolLM2 is freed here
    instead of staying resident through the MPC and HE tests that peak near 10 GB."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return AutoModelForCausalLM.from_pretrained(
        str(smollm.source.parent), gguf_file=smollm.source.name, dtype=torch.float32
    ).eval()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_transformers(smollm, hf_smollm, prompt):
    ids = smollm.prompt_ids(prompt)
    with torch.inference_mode():
        ref = hf_smollm(torch.tensor([ids])).logits[0]
        model = smollm.plain()
        cache = model.new_cache()
        # prefill all but the last token, then decode the last one through the KV cache
        model.forward(ids[:-1], cache, 0)
        last = model.forward(ids[-1:], cache, len(ids) - 1)[-1]
        full = smollm.logits(ids)
    assert (full - ref).abs().max().item() <= 1e-3
    assert torch.equal(full.argmax(-1), ref.argmax(-1))
    assert (last - ref[-1]).abs().max().item() <= 1e-3


def test_prefill_equals_token_by_token(smollm):
    ids = smollm.prompt_ids("Name a colour.")
    model = smollm.plain()
    with torch.inference_mode():
        one_shot = model.forward(ids, model.new_cache(), 0)[-1]
        stepwise = smollm.logits(ids)[-1]
    assert (one_shot - stepwise).abs().max().item() <= 1e-4


def test_greedy_answer_is_paris(smollm):
    out = smollm.generate("What is the capital of France?", max_new_tokens=24)
    assert "Paris" in out.text
    assert out.stats.stop_reason == "eos"
    assert out.stats.prompt_tokens > 30


def test_generation_matches_transformers_greedy(smollm, hf_smollm):
    ids = smollm.prompt_ids("Give me one tip for learning Python.")
    ours = smollm.generate("Give me one tip for learning Python.", max_new_tokens=12).token_ids
    with torch.inference_mode():
        ref = hf_smollm.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[
            0, len(ids) :
        ]
    assert ours == ref.tolist()[: len(ours)]
