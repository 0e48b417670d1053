"""SmolLM2-135M decoding B sequences per protocol run (`mpc.batch.BatchedMpcOps`), for B in
`batches`, with three party processes over loopback TLS (figures only: as in `mpc_bench`, the
client's input masks come from a public seed and each step's argmax is opened among the parties
to feed the next step, so this run hides nothing; the engine and the rounds are the real ones).

Per B: one batched prefill of B prompts (lengths `prompt_tokens` - j, so the caches are ragged),
then `decode_tokens` batched decode steps; per step the wall and CPU seconds, rounds and bytes
sent of each party, hence aggregate tokens/s = B / step time.
    python -m privinfer.bench.mpc_bench smollm2-batch --net loopback \
        --params '{"batches": [1, 2, 4], "decode_tokens": 3}'
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Sequence
from typing import Any

import privinfer
from privinfer.models.costs import peak_rss_mb
from privinfer.mpc.batch import BatchedMpcOps
from privinfer.mpc.protocols import compare
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import reveal_ring

TEXT = "Explain in one short paragraph why the sky is blue and why sunsets are red. " * 2


def batch_program(
    batches: Sequence[int] = (1, 2, 4),
    prompt_tokens: int = 8,
    decode_tokens: int = 3,
    layers: int | None = None,
) -> Callable[[Party], dict[str, Any]]:
    from privinfer.bench.mpc_bench import SeededClient, _metered

    lm = privinfer.load("smollm2-135m")
    if layers is not None:
        lm.cfg = dataclasses.replace(lm.cfg, n_layers=layers)
    ids = lm.prompt_ids(TEXT, chat=False)

    def program(p: Party) -> dict[str, Any]:
        ops = BatchedMpcOps(p, SeededClient(), private_weights=True)
        model, prep = _metered(p, lambda: lm.build(ops))
        lm.weights = {}  # one party per process: the shares exist, drop the float model
        gc.collect()

        def step(rows: list[tuple[list[int], Any, int]]) -> list[int]:
            logits = model.forward_batch(rows)
            _, idx = compare.argmax_lastdim(p, logits)
            return [int(t) for t in reveal_ring(p, idx).reshape(-1).tolist()]

        out: dict[str, Any] = {"prepare": prep}
        for b in batches:
            prompts = [ids[: max(2, prompt_tokens - j)] for j in range(b)]
            caches = [model.new_cache() for _ in prompts]
            toks, pre = _metered(
                p,
                lambda ps=prompts, cs=caches: step(
                    [(q, c, 0) for q, c in zip(ps, cs, strict=True)]
                ),
            )
            seqs, steps = [[t] for t in toks], []
            for k in range(decode_tokens):
                rows = [
                    ([s[-1]], c, len(q) + k) for s, c, q in zip(seqs, caches, prompts, strict=True)
                ]
                toks, cost = _metered(p, lambda r=rows: step(r))
                steps.append(cost)
                for s, t in zip(seqs, toks, strict=True):
                    s.append(t)
            out[f"b{b}"] = {"prefill": pre, "decode": steps, "tokens": seqs}
        out["peak_rss_mb"] = peak_rss_mb()
        return out

    return program


def summarise_batches(parties: list[dict[str, Any]]) -> dict[str, Any]:
    """Per B: median decode step wall time (max over parties), aggregate tokens/s, rounds and
    bytes per step (party 0), CPU seconds per step (each party process)."""
    import statistics

    out: dict[str, Any] = {}
    for key in [k for k in parties[0] if k.startswith("b")]:
        b = int(key[1:])
        steps = list(zip(*(r[key]["decode"] for r in parties), strict=True))
        walls = [max(s["wall_s"] for s in step) for step in steps]
        med = statistics.median(walls)
        out[key] = {
            "batch": b,
            "decode_step_wall_s": [round(w, 3) for w in walls],
            "decode_step_median_s": round(med, 3),
            "tokens_per_s": round(b / med, 4),
            "rounds_per_step": [s[0]["rounds"] for s in steps],
            "mb_sent_per_step_party0": [round(s[0]["bytes_sent"] / 1e6, 2) for s in steps],
            "cpu_s_per_step_per_party": [[round(x["process_cpu_s"], 2) for x in s] for s in steps],
            "tokens": parties[0][key]["tokens"],
        }
    ones = out.get("b1", {}).get("tokens_per_s")
    for row in out.values():
        row["speedup_vs_b1"] = round(row["tokens_per_s"] / ones, 2) if ones else None
    out["peak_rss_mb"] = [round(r["peak_rss_mb"]) for r in parties]
    return out
