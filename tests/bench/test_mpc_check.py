"""`privinfer check --mode mpc`: per-layer residual errors and greedy agreement on a tiny LLaMA."""

from __future__ import annotations

import json

import pytest

from privinfer.bench import mpc_check as check
from privinfer.errors import PrivinferError
from privinfer.models.llama import Llama
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights


class _TinyLM:
    def __init__(self) -> None:
        self.cfg = tiny_llama_config()
        self.weights = tiny_llama_weights(self.cfg, seed=4)

    def build(self, ops):
        return Llama(self.cfg, self.weights, ops)


def test_check_reports_layers_and_agreement():
    r = check.check_mpc(_TinyLM(), [256, 72, 105, 33, 10], n_tokens=3, frac_bits=16)
    assert [row["layer"] for row in r["layers"]] == [0, 1]
    assert all(row["max_err_mlp"] < 0.01 for row in r["layers"])
    assert all(row["max_abs_plain"] > 0.1 for row in r["layers"])
    assert len(r["max_logit_error"]) == 3 and max(r["max_logit_error"]) < 0.02
    assert r["tokens_agree"] and len(r["mpc_tokens"]) == 3
    text = check.format_report(r)
    assert "greedy tokens" in text and "agree" in text
    json.dumps(r)


def test_check_command_parses_and_rejects_bad_input():
    from privinfer.cli.main import build_parser

    args = build_parser().parse_args(
        ["check", "hi", "--tokens", "2", "--frac-bits", "18", "--json"]
    )
    assert (args.tokens, args.frac_bits, args.mode, args.json) == (2, 18, "mpc", True)
    args.frac_bits, args.threads = 40, 1
    with pytest.raises(PrivinferError):
        args.func(args)
