"""Fixed-point dry run: every protocol on representative inputs, three parties in one process,
max error against float64 and cost per op, to choose the fractional bits (no security claim:
all parties share one process).

The dry run executes exactly the production arithmetic (encoding, truncation, approximations)
over the in-process MemoryNetwork, so its errors are the engine's errors. Run:
    python -m privinfer.bench.mpc_dryrun --frac-bits 14 16 18 20
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import privinfer
from privinfer.mpc.client import LocalClient
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.protocols import activations, arith, compare, nonlinear, norms, softmax
from privinfer.mpc.runtime import Party, run_local
from privinfer.mpc.shares import RShare, reveal, share_from


@dataclass
class OpError:
    """One op's measured fidelity and cost at a given precision; `max_rel_error` counts only the
    part of each error beyond one output ulp."""

    op: str
    input_range: str
    max_abs_error: float
    max_rel_error: float
    rounds: int
    bytes_sent_per_party: int


@dataclass
class _Case:
    op: str
    input_range: str
    inputs: list[torch.Tensor]
    run: Callable[[Party, list[RShare]], RShare]
    reference: Callable[..., torch.Tensor]


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _massive_rows(g: torch.Generator, n: int = 576) -> torch.Tensor:
    x = torch.randn(4, n, generator=g, dtype=torch.float64)
    x[0] *= 0.085
    x[1, 3], x[1, 100] = 24900.0, -24000.0
    x[2] *= 30.0
    x[3] = 3e4 * torch.sign(x[3])
    return x


def _cases(g: torch.Generator) -> list[_Case]:
    a = torch.randn(16, 64, generator=g, dtype=torch.float64) * 10
    b = torch.randn(16, 64, generator=g, dtype=torch.float64) * 10
    w = torch.randn(64, 32, generator=g, dtype=torch.float64) * 0.1
    wide = torch.linspace(-30, 30, 2401, dtype=torch.float64)
    pos = torch.logspace(-3, 6, 400, dtype=torch.float64)
    logits = torch.randn(3, 37, 37, generator=g, dtype=torch.float64) * 10
    mask = softmax.causal_mask(37, 37)
    rows = _massive_rows(g)
    gamma = torch.rand(576, generator=g, dtype=torch.float64) + 0.5
    silu = torch.nn.functional.silu
    return [
        _Case("mul", "|x|,|y| <= 40", [a, b], lambda p, s: arith.mul(p, s[0], s[1]), torch.mul),
        _Case(
            "matmul",
            "16x64 @ 64x32",
            [a, w],
            lambda p, s: arith.matmul(p, s[0], s[1]),
            torch.matmul,
        ),
        _Case(
            "max",
            "37 entries, std 10",
            [logits[0]],
            lambda p, s: compare.max_lastdim(p, s[0]),
            lambda x: x.max(-1).values,
        ),
        _Case(
            "exp",
            "[-16, 0] (clipped below)",
            [torch.linspace(-16, 0, 1601, dtype=torch.float64)],
            lambda p, s: nonlinear.exp_nonpos(p, s[0]),
            torch.exp,
        ),
        _Case(
            "reciprocal",
            "[1e-3, 1e6]",
            [pos],
            lambda p, s: nonlinear.reciprocal(p, s[0]),
            lambda x: 1 / x,
        ),
        _Case("rsqrt", "[1e-3, 1e6]", [pos], lambda p, s: nonlinear.rsqrt(p, s[0]), torch.rsqrt),
        _Case("silu", "[-30, 30]", [wide], lambda p, s: activations.silu(p, s[0]), silu),
        _Case("gelu", "[-30, 30]", [wide], lambda p, s: activations.gelu(p, s[0]), _gelu),
        _Case(
            "sigmoid", "[-30, 30]", [wide], lambda p, s: activations.sigmoid(p, s[0]), torch.sigmoid
        ),
        _Case(
            "softmax",
            "3x37x37 causal, std 10",
            [logits],
            lambda p, s: softmax.softmax(p, s[0], mask),
            lambda x: torch.softmax(x.masked_fill(~mask, float("-inf")), -1),
        ),
        _Case(
            "rms_norm",
            "576 ch, |x| <= 3e4, mean(x^2) 0.0072..9e8",
            [rows],
            lambda p, s: norms.rms_norm(p, s[0], gamma, eps=1e-5),
            lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * gamma,
        ),
        _Case(
            "layer_norm",
            "576 ch, |x| <= 3e4",
            [rows + 3.0],
            lambda p, s: norms.layer_norm(p, s[0], gamma, None, eps=1e-5),
            lambda x: torch.nn.functional.layer_norm(x, (576,), gamma, None, eps=1e-5),
        ),
    ]


def measure(frac_bits: int = 16, seed: int = 0) -> list[OpError]:
    """Run every case at `frac_bits`; errors are against float64 on the encoded inputs (so they
    measure the protocols, not the input rounding)."""
    g = torch.Generator().manual_seed(seed)
    cases = _cases(g)
    scale = float(2**frac_bits)

    def program(p: Party) -> list[tuple[torch.Tensor, int, int]]:
        out = []
        for case in cases:
            xs = [share_from(p, 0, x if p.pid == 0 else None, tuple(x.shape)) for x in case.inputs]
            p.meter.reset()
            y = case.run(p, xs)
            cost = p.meter.totals()
            rounds = sum(c.rounds for c in cost.values())
            sent = sum(c.bytes_sent for c in cost.values())
            out.append((reveal(p, y), rounds, sent))
        return out

    results = run_local(program, frac_bits=frac_bits, timeout_s=120.0)
    report = []
    for k, case in enumerate(cases):
        got = results[0][k][0]
        ref = case.reference(*[torch.round(x * scale) / scale for x in case.inputs])
        err = (got - ref).abs()
        # relative error beyond one output ulp (tiny references are dominated by that ulp)
        nz = ref.abs() > 0
        rel = ((err - 1.0 / scale).clamp(min=0)[nz] / ref.abs()[nz]).max().item()
        sent = max(r[k][2] for r in results)
        report.append(
            OpError(case.op, case.input_range, err.max().item(), rel, results[0][k][1], sent)
        )
    return report


def format_table(frac_bits: int, rows: list[OpError]) -> str:
    """Plain-text table of one `measure` result."""
    lines = [
        f"f = {frac_bits}",
        f"{'op':<11} {'range':<42} {'max abs':>9} {'rel>1ulp':>9} {'rounds':>6} {'bytes/party':>11}",
    ]
    for r in rows:
        lines.append(
            f"{r.op:<11} {r.input_range:<42} {r.max_abs_error:9.2e} "
            f"{r.max_rel_error:9.2e} {r.rounds:6d} {r.bytes_sent_per_party:11d}"
        )
    return "\n".join(lines)


def smollm2_fidelity(
    prompt: str = "What is the capital of France?",
    frac_bits: int = 16,
    private_weights: bool = False,
) -> dict[str, object]:
    """One MPC forward of the real SmolLM2-135M over the chat-formatted `prompt` against the
    plain float32 engine: max logit error, top-2 gap, argmax agreement, per-op costs."""
    lm = privinfer.load("smollm2-135m")
    ids = lm.prompt_ids(prompt)
    plain = lm.plain()
    with torch.inference_mode():
        ref = plain.forward(ids, plain.new_cache(), 0)[-1].double()
    client = LocalClient(frac_bits)

    def program(p: Party) -> tuple[torch.Tensor, float, object]:
        ops = MpcOps(p, client, private_weights=private_weights)
        model = lm.build(ops)
        t0 = time.perf_counter()
        logits = ops.reveal(model.forward(ids, model.new_cache(), 0))
        return logits, time.perf_counter() - t0, ops.costs()

    logits, wall_s, costs = run_local(program, frac_bits=frac_bits, timeout_s=1800.0)[0]
    got = logits[-1].double()
    top2 = ref.topk(2).values
    return {
        "tokens": len(ids),
        "frac_bits": frac_bits,
        "max_logit_error": (got - ref).abs().max().item(),
        "plain_top2_gap": (top2[0] - top2[1]).item(),
        "same_argmax": int(got.argmax()) == int(ref.argmax()),
        "wall_s": wall_s,
        "costs": costs.to_dict(),  # type: ignore[attr-defined]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fixed-point dry run of the MPC protocols.")
    parser.add_argument("--frac-bits", type=int, nargs="+", default=[16])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--smollm2", action="store_true", help="also run one MPC forward of the real SmolLM2-135M"
    )
    parser.add_argument("--private-weights", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for f in args.frac_bits:
        print(format_table(f, measure(f, args.seed)))
        if args.smollm2:
            print(smollm2_fidelity(frac_bits=f, private_weights=args.private_weights))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
