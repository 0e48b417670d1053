"""The fidelity subset in `make test`: SmolLM2 greedy tokens under MPC (private weights) equal the
plain engine's on chat prompts of the benchmark set (`privinfer bench mpc-fidelity` runs all 20
prompts x 16 tokens)."""

from __future__ import annotations

import pytest

from privinfer.bench.mpc_fidelity import PROMPTS, run_fidelity, summary_line


@pytest.mark.slow
@pytest.mark.timeout(1500)  # three parties as threads of this process, ~10 GB: slow when loaded
def test_chat_prompts_greedy_tokens_equal_plain(smollm):
    # Two chat prompts: the second shows each prompt gets a fresh KV cache over the once-shared
    # weights; 4 greedy tokens are 3 decode steps over a growing cache. The session's SmolLM2
    # (tests/conftest.py), since a load of its own costs ~25 s on a busy machine.
    r = run_fidelity(smollm, PROMPTS[:2], n_tokens=4)
    assert r["prompts"] == 2 and r["private_weights"]
    for row in r["rows"]:
        assert len(row["plain_tokens"]) >= 1
        assert row["mpc_tokens"] == row["plain_tokens"], row["prompt"]
        assert row["max_logit_error"] < 0.05
    assert r["identical"] == 2 and r["first_token_equal"] == 2
    assert summary_line(r).startswith("2/2 prompts identical over 4 greedy tokens")


def test_fidelity_report_counts_a_divergence():
    import torch

    from privinfer.bench.mpc_fidelity import _compare

    rows = [torch.tensor([0.0, 1.0, 3.0])]
    r = _compare("p", [2, 5, 7], rows, [2, 5, 9], rows, 1.0)
    assert not r["identical"] and r["first_token_equal"] and r["agreeing_prefix"] == 2
    assert r["first_top2_gap"] == pytest.approx(2.0) and r["max_logit_error"] == 0.0
