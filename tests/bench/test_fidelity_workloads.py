"""The fidelity workloads' glue: rows for the results table, and refusal of --net."""

from __future__ import annotations

import argparse

import pytest

from privinfer.bench import fidelity
from privinfer.bench.table import render
from privinfer.errors import InputError


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"net": "none", "quick": True, **kw})


def test_mpc_fidelity_row_reports_counts(monkeypatch, tmp_path):
    import json

    import privinfer
    import privinfer.bench.mpc_fidelity as mf

    seen = {}

    def fake_run(lm, prompts, tokens, say=None):
        seen.update(prompts=len(prompts), tokens=tokens)
        return {"prompts": 3, "max_new_tokens": 8, "identical": 2, "first_token_equal": 3,
                "max_logit_error": 0.0071, "wall_s": 12.0, "threads": 1, "rows": [{"prompt": "p"}]}  # fmt: skip

    monkeypatch.setattr(mf, "run_fidelity", fake_run)
    monkeypatch.setattr(privinfer, "load", lambda name: name)
    out = fidelity.workload_mpc_fidelity(_args(), lambda m: None)
    assert seen == {"prompts": 3, "tokens": 8}
    assert out["mpc-fidelity"]["per_prompt"] == [{"prompt": "p"}]
    row = out["mpc-fidelity"]["rows"][0]
    assert row[1] == "2/3 identical" and "first token equal on 3/3" in row[4]
    f = tmp_path / "2026-11-26-mpc-fidelity-quick.json"
    f.write_text(json.dumps(out))
    assert "| mpc-fidelity | SmolLM2-135M, 3 chat prompts x 8 greedy tokens | 2/3 identical" in (
        render([f])
    )


@pytest.mark.parametrize("name", sorted(fidelity.WORKLOADS))
def test_fidelity_workloads_refuse_network_emulation(name):
    with pytest.raises(InputError, match="--net none"):
        fidelity.WORKLOADS[name](_args(net="lan"), lambda m: None)
