"""Helpers for the MPC tests: run three in-process parties on public test inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from privinfer.mpc.runtime import Party, run_local
from privinfer.mpc.shares import RShare, reveal, share_from

KEYS = [bytes([k]) * 16 for k in (11, 22, 33)]  # deterministic test keys


def run3(
    fn: Callable[[Party, list[RShare]], RShare | torch.Tensor],
    inputs: list[torch.Tensor],
    frac_bits: int = 16,
) -> tuple[torch.Tensor, Party]:
    """Party 0 shares `inputs`, all run `fn`, the (RShare) result is revealed; returns party 0's
    decoded result (and party 0 for cost inspection)."""

    def program(p: Party) -> tuple[Any, Party]:
        xs = [share_from(p, 0, x if p.pid == 0 else None, tuple(x.shape)) for x in inputs]
        out = fn(p, xs)
        if isinstance(out, RShare):
            out = reveal(p, out)
        return out, p

    results = run_local(program, frac_bits=frac_bits, keys=KEYS, timeout_s=30.0)
    for r in results[1:]:
        assert torch.equal(r[0], results[0][0])
    return results[0]
