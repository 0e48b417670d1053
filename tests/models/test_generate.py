"""Generation: sampling with a seed, stopping, streaming, and the length/empty-prompt errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import privinfer
from privinfer.engines.plain import sample_token
from privinfer.errors import InputError
from privinfer.models.ops import Sampler
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    cfg = tiny_llama_config()
    return privinfer.load(
        str(write_hf_folder(tmp_path_factory.mktemp("t") / "hf", cfg, tiny_llama_weights(cfg)))
    )


def test_seeded_sampling_is_reproducible(tiny_lm):
    a = tiny_lm.generate("hello", temperature=5.0, seed=7, max_new_tokens=20).token_ids
    b = tiny_lm.generate("hello", temperature=5.0, seed=7, max_new_tokens=20).token_ids
    c = tiny_lm.generate("hello", temperature=5.0, seed=8, max_new_tokens=20).token_ids
    assert a == b
    assert a != c


def test_tiny_top_p_equals_greedy(tiny_lm):
    greedy = tiny_lm.generate("hello", max_new_tokens=10).token_ids
    nucleus = tiny_lm.generate(
        "hello", temperature=0.7, top_p=1e-6, seed=1, max_new_tokens=10
    ).token_ids
    assert nucleus == greedy


def test_max_tokens_stops(tiny_lm):
    out = tiny_lm.generate("hello", max_new_tokens=5)
    assert len(out.token_ids) <= 5
    if out.stats.stop_reason == "length":
        assert len(out.token_ids) == 5
        assert len(out.stats.token_s) == 4


def test_stream_yields_pieces_that_join_to_text(tiny_lm):
    s = tiny_lm.stream("hello", max_new_tokens=12)
    pieces = list(s)
    assert s.result is not None
    assert "".join(pieces) == s.result.text


def test_sampling_distribution_follows_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0])
    g = torch.Generator().manual_seed(0)
    draws = [sample_token(logits, Sampler(temperature=1.0), g) for _ in range(4000)]
    freq = torch.bincount(torch.tensor(draws), minlength=3).double() / len(draws)
    assert torch.allclose(freq, torch.softmax(logits.double(), 0), atol=0.03)


def test_prompt_longer_than_context(tiny_lm):
    with pytest.raises(InputError, match="more than the model's context of 256"):
        tiny_lm.generate("x" * 400)


def test_empty_prompt(tiny_lm):
    with pytest.raises(InputError, match="empty"):
        tiny_lm.generate("   ")


def test_bad_sampling_parameters(tiny_lm):
    with pytest.raises(InputError, match="--top-p"):
        tiny_lm.generate("hi", top_p=0)


def test_unknown_mode(tiny_lm):
    with pytest.raises(InputError, match="unknown mode"):
        tiny_lm.generate("hi", mode="quantum")


def test_decode_loop_runs_while_the_client_says_proceed():
    """budget=None and `proceed`: the loop an MPC party runs while its client sends continue."""
    from privinfer.models.generate import GenerationStats, decode_loop

    calls = []

    def step(ids, pos, i):
        calls.append((list(ids), pos, i))
        return 7

    answers = iter([True, True, False])
    stats = GenerationStats()
    out = list(
        decode_loop(
            step, [1, 2, 3], budget=None, stop_ids=(), stats=stats, proceed=lambda: next(answers)
        )
    )
    assert out == [7, 7, 7]
    assert calls == [([1, 2, 3], 0, 0), ([7], 3, 1), ([7], 4, 2)]
    assert stats.stop_reason == "stopped" and stats.new_tokens == 3 and len(stats.token_s) == 2


def test_families_table_lookups():
    from privinfer.errors import ModelLoadError
    from privinfer.models import families

    cfg = tiny_llama_config()
    assert families.get(cfg) is families.by_name("llama")
    assert families.by_name("llama").task == "generate" and families.by_name("bert").task == "embed"
    assert families.by_name("llama").config(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    with pytest.raises(ModelLoadError, match="unknown model family 'nope'"):
        families.by_name("nope")
