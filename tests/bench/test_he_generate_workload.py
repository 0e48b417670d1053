"""The he-smollm2 workload's glue: plain first, HE second, rows that say whether tokens match."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

from privinfer.bench import he_generate
from privinfer.bench.table import render
from privinfer.errors import InputError


class FakeLM:
    def __init__(self, he_ids):
        self.he_ids = he_ids
        self.calls = []

    def generate(self, prompt, *, max_new_tokens, chat, mode="plain"):
        self.calls.append((mode, max_new_tokens, chat))
        if mode == "he":
            he = {"rounds": 900, "bytes_to_server": 3e9, "bytes_to_client": 4e8}
            stats = SimpleNamespace(
                prompt_tokens=5, prefill_s=800.0, token_s=[700.0, 720.0], details={"he": he}
            )
            return SimpleNamespace(token_ids=self.he_ids, stats=stats)
        stats = SimpleNamespace(prompt_tokens=5, prefill_s=0.05, token_s=[0.035, 0.036])
        return SimpleNamespace(token_ids=[7042, 30, 198], stats=stats)


@pytest.mark.parametrize("he_ids, word", [([7042, 30, 198], "identical"), ([7042, 1, 2], "DIFFER")])
def test_rows_compare_he_tokens_with_plain(monkeypatch, tmp_path, he_ids, word):
    import privinfer

    lm = FakeLM(he_ids)
    monkeypatch.setattr(privinfer, "load", lambda name: lm)
    args = argparse.Namespace(net="none", quick=False, steps=None)
    out = he_generate.workload_he_smollm2(args, lambda m: None)["he-smollm2"]
    assert lm.calls == [("plain", 3, False), ("he", 3, False)]
    assert out["decode_s_per_token"] == 710.0 and out["rounds"] == 900
    assert out["identical_to_plain"] is (word == "identical")
    f = tmp_path / "2026-11-26-he-smollm2.json"
    f.write_text(json.dumps({"he-smollm2": out}))
    table = render([f])
    assert "| he-smollm2 | SmolLM2-135M decode per token | 710 s | plain 36 ms |" in table
    assert word in table


def test_he_smollm2_refuses_network_emulation():
    with pytest.raises(InputError, match="--net none"):
        he_generate.workload_he_smollm2(
            argparse.Namespace(net="lan", quick=False, steps=None), lambda m: None
        )
