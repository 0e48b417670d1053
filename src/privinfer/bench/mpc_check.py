"""`privinfer check --mode mpc`: the fixed-point dry run of a whole model against the plain engine,
per-layer residual errors and greedy-token agreement (no security claim: the three parties run
as threads of this process and every intermediate value is opened for the comparison).

The same model definition runs on `PlainOps` (float32) and on `MpcOps`; a thin wrapper records
the output of every `add` (the residual stream: two per decoder layer), revealing it on the MPC
side. Then both engines decode `--tokens` greedy tokens from their own caches (MPC picks its
tokens with its own secure argmax) and the tokens and logits are compared.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch

import privinfer
from privinfer.api import LanguageModel
from privinfer.engines.plain import PlainOps
from privinfer.errors import PrivinferError
from privinfer.models.ops import Sampler
from privinfer.mpc.client import LocalClient
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.ring import DEFAULT_FRAC_BITS
from privinfer.mpc.runtime import Party, run_local


class _ResidualRecorder:
    """Forwards every `Ops` call to `inner`; keeps the (revealed) output of each `add` while
    `recording` is on."""

    def __init__(self, inner: Any, reveal: Callable[[Any], torch.Tensor]) -> None:
        self._inner, self._reveal = inner, reveal
        self.recording = True
        self.adds: list[torch.Tensor] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def add(self, a: Any, b: Any) -> Any:
        out = self._inner.add(a, b)
        if self.recording:
            self.adds.append(self._reveal(out).double())
        return out


def _decode(model: Any, ops: Any, rec: _ResidualRecorder, ids: list[int], n_tokens: int) -> tuple:
    """Prefill (recording the residuals), then greedy tokens; returns (tokens, last logits)."""
    cache = model.new_cache()
    logits = model.forward(ids, cache, 0)
    rec.recording = False
    tokens: list[int] = []
    all_logits = []
    for step in range(n_tokens):
        all_logits.append(ops.reveal(logits).double().reshape(-1))
        tokens.append(ops.next_token(logits, Sampler(), step))
        if step + 1 < n_tokens:
            logits = model.forward([tokens[-1]], cache, len(ids) + step)
    return tokens, all_logits


def check_mpc(
    lm: Any,
    ids: list[int],
    n_tokens: int = 4,
    frac_bits: int = DEFAULT_FRAC_BITS,
    private_weights: bool = False,
) -> dict[str, Any]:
    """Run `lm` (a loaded decoder) on `ids` in float32 and in MPC; per-layer residual errors,
    logit errors per generated token and greedy agreement."""
    if n_tokens < 1:
        raise PrivinferError("--tokens must be at least 1.")
    plain_ops = PlainOps()
    prec = _ResidualRecorder(plain_ops, lambda x: x.detach())
    with torch.inference_mode():
        want, want_logits = _decode(lm.build(prec), plain_ops, prec, ids, n_tokens)
    client = LocalClient(frac_bits)

    def program(p: Party) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor], float]:
        ops = MpcOps(p, client, private_weights=private_weights)
        rec = _ResidualRecorder(ops, ops.reveal)
        model = lm.build(rec)
        t0 = time.perf_counter()
        got, logits = _decode(model, ops, rec, ids, n_tokens)
        return got, logits, rec.adds, time.perf_counter() - t0

    got, got_logits, mpc_adds, wall_s = run_local(program, frac_bits, timeout_s=3600.0)[0]
    n_layers = lm.cfg.n_layers
    lead = len(prec.adds) - 2 * n_layers
    layers = []
    for i in range(n_layers):
        pair = [lead + 2 * i, lead + 2 * i + 1]
        errs = [(mpc_adds[k] - prec.adds[k]).abs().max().item() for k in pair]
        layers.append(
            {
                "layer": i,
                "max_abs_plain": prec.adds[pair[1]].abs().max().item(),
                "max_err_attn": errs[0],
                "max_err_mlp": errs[1],
            }
        )
    logit_errs = [(g - w).abs().max().item() for g, w in zip(got_logits, want_logits, strict=True)]
    top2 = want_logits[0].topk(2).values
    return {
        "mode": "mpc",
        "prompt_tokens": len(ids),
        "frac_bits": frac_bits,
        "private_weights": private_weights,
        "layers": layers,
        "max_logit_error": logit_errs,
        "plain_top2_gap": (top2[0] - top2[1]).item(),
        "plain_tokens": want,
        "mpc_tokens": got,
        "tokens_agree": want == got,
        "mpc_wall_s": wall_s,
    }


def format_report(r: dict[str, Any]) -> str:
    """Human-readable table of a `check_mpc` result."""
    lines = [
        f"mpc check: {r['prompt_tokens']} prompt tokens, f = {r['frac_bits']}, "
        f"weights {'private' if r['private_weights'] else 'public'}, MPC {r['mpc_wall_s']:.1f} s",
        f"{'layer':>5} {'max|x| plain':>13} {'err attn':>10} {'err mlp':>10} {'rel':>9}",
    ]
    for row in r["layers"]:
        rel = max(row["max_err_attn"], row["max_err_mlp"]) / max(row["max_abs_plain"], 1e-12)
        lines.append(
            f"{row['layer']:>5} {row['max_abs_plain']:>13.4g} {row['max_err_attn']:>10.3e} "
            f"{row['max_err_mlp']:>10.3e} {rel:>9.2e}"
        )
    errs = ", ".join(f"{e:.4f}" for e in r["max_logit_error"])
    lines.append(f"max logit error per token: {errs} (plain top-2 gap {r['plain_top2_gap']:.4f})")
    verdict = "agree" if r["tokens_agree"] else "DIFFER"
    lines.append(f"greedy tokens: plain {r['plain_tokens']}, mpc {r['mpc_tokens']}: {verdict}")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    if args.mode != "mpc":
        raise PrivinferError(f"check supports --mode mpc only, not {args.mode}.")
    if not 12 <= args.frac_bits <= 24:
        raise PrivinferError("--frac-bits must lie in [12, 24].")
    torch.set_num_threads(args.threads or 1)
    lm = privinfer.load(args.model)
    if not isinstance(lm, LanguageModel):
        raise PrivinferError(f"{args.model} is not a decoder; check runs decoders only.")
    ids = lm.prompt_ids(args.prompt, chat=not args.raw)
    report = check_mpc(lm, ids, args.tokens, args.frac_bits, args.private_weights)
    report["model"] = args.model
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report["tokens_agree"] else 1
