"""Fidelity workloads of `privinfer bench`: do the private modes give the plain model's answers?

* `mpc-fidelity`: SmolLM2 greedy tokens under MPC against plain on 20 chat prompts, 16 tokens
  each (`privinfer.bench.mpc_fidelity`; --quick: 3 prompts, 8 tokens).
* `he-fidelity`: MiniLM-L6 embeddings under CKKS against plain on 20 sentences (ten paraphrase
  pairs), cosine per sentence and the pair ranking (`privinfer.bench.he_bench.bench_fidelity`;
  --quick: 4 sentences).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import privinfer
from privinfer.bench import mpc_fidelity
from privinfer.errors import InputError

Say = Callable[[str], None]


def workload_mpc_fidelity(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    if args.net != "none":
        raise_net_unsupported()
    prompts = mpc_fidelity.PROMPTS[:3] if args.quick else mpc_fidelity.PROMPTS
    tokens = 8 if args.quick else 16
    say(
        f"mpc-fidelity: SmolLM2-135M, {len(prompts)} chat prompts x {tokens} greedy tokens, "
        "private weights, 3 parties in-process (tens of minutes)"
    )
    # mpc_fidelity.run_fidelity (not a from-import): tests patch the module attribute
    r = mpc_fidelity.run_fidelity(privinfer.load("smollm2-135m"), prompts, tokens, say=say)
    say(mpc_fidelity.summary_line(r))
    how = (
        f"first token equal on {r['first_token_equal']}/{r['prompts']}, max logit error "
        f"{r['max_logit_error']:.4f}, {r['wall_s']:.0f} s in all, 3 parties as threads, "
        f"{r['threads']} thr"
    )
    row = [
        f"SmolLM2-135M, {r['prompts']} chat prompts x {r['max_new_tokens']} greedy tokens",
        f"{r['identical']}/{r['prompts']} identical",
        "target >= 18/20, first token 20/20",
        "",
        how,
    ]
    per_prompt = r.pop("rows")  # "rows" is the results table's key
    return {"mpc-fidelity": {**r, "per_prompt": per_prompt, "rows": [row]}, "plain": None}


def workload_he_fidelity(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    from privinfer.bench.he_bench import bench_fidelity  # lazy: he_bench imports tenseal

    if args.net != "none":
        raise_net_unsupported()
    count = 4 if args.quick else 20
    say(f"he-fidelity: MiniLM-L6 under CKKS on {count} held-out sentences, in-process (long)")
    r = bench_fidelity(count=count, say=say)
    how = (
        f"nearest neighbour = plain for {r['nearest_neighbour_equal']}/{count}, each sentence's "
        f"ranking of the others = plain for {r['per_sentence_ranking_equal']}/{count}; ranking of "
        f"all {r['pairs']} pairs equal: {r['pair_ranking_equal']} (Kendall tau "
        f"{r['kendall_tau']:.5f}, swaps only between pairs <= {r['max_plain_gap_of_discordant']:.1e}"
        f" apart in plaintext; max similarity error {r['max_similarity_error']:.1e})"
    )
    row = [
        f"MiniLM-L6 embeddings, {count} sentences",
        f"min cosine {r['min_cosine']:.6f}",
        "target >= 0.99, pair ranking = plain",
        "",
        how,
    ]
    return {"he-fidelity": {**r, "rows": [row]}, "plain": None}


def raise_net_unsupported() -> None:
    raise InputError("fidelity workloads measure numbers, not the network: use --net none")


WORKLOADS: dict[str, Callable[[argparse.Namespace, Say], dict[str, Any]]] = {
    "mpc-fidelity": workload_mpc_fidelity,
    "he-fidelity": workload_he_fidelity,
}
