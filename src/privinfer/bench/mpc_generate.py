"""`privinfer bench --mode mpc` on loopback: SmolLM2-135M through the path the CLI runs.

`privinfer generate --mode mpc` shares the model into three throwaway party stores, starts three
`privinfer.mpc.party_main` processes (one torch thread each) that load their shares from those
stores, and acts as the client over mutually authenticated TLS. This benchmark calls the same
code (`LanguageModel.generate(mode="mpc")`) on the same chat prompt as the issue's command
(`"What is the capital of France?"`, 37 tokens with the default system prompt) and reads the
parties' own per-step rounds, bytes and by-op wall time back from the session's STATS, so its
figures are the CLI's. Greedy tokens are compared with the plain engine's.
(The emulated LAN/WAN runs keep the party-program benchmark, `mpc_bench.smollm2_program`: the
CLI's launcher starts its parties on 127.0.0.1 only.)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import privinfer

Say = Callable[[str], None]
PROMPT = "What is the capital of France?"


def _per_token(parties: dict[str, Any], key: str) -> list[float]:
    return [t[key] for t in parties["0"].get("decode_per_token", [])]


def bench_mpc_cli_path(max_new_tokens: int = 8, prompt: str = PROMPT) -> dict[str, Any]:
    """One greedy generation in mode mpc through the CLI's path; timings as the client sees
    them, rounds and bytes per decoded token as party 0 counts them (the parties are
    symmetric up to a few bytes)."""
    lm = privinfer.load("smollm2-135m")
    plain = lm.generate(prompt, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    got = lm.generate(prompt, mode="mpc", max_new_tokens=max_new_tokens, progress=None)
    wall = time.perf_counter() - t0
    st = got.stats
    parties = st.details["mpc"]["parties"]
    n = max(1, len(st.token_s))
    by_op = {
        op: {
            "rounds": c["rounds"] / n,
            "mb_sent": round(c["bytes_sent"] / n / 1e6, 3),
            "wall_s": round(c["wall_s"] / n, 3),
        }
        for op, c in (parties["0"].get("by_op_decode") or {}).items()
    }
    return {
        "prompt_tokens": st.prompt_tokens,
        "new_tokens": st.new_tokens,
        "prefill_s": st.prefill_s,
        "per_token_s": st.token_s,
        "decode_median_wall_s": statistics.median(st.token_s) if st.token_s else None,
        "rounds_per_token": statistics.median(_per_token(parties, "rounds") or [0]),
        "bytes_per_token_party0": statistics.median(_per_token(parties, "bytes_sent") or [0]),
        "prefill_rounds": parties["0"]["prefill"]["rounds"],
        "by_op_per_decoded_token_party0": by_op,
        "peak_rss_mb": [parties[p]["peak_rss_mb"] for p in sorted(parties)],
        "tokens": got.token_ids,
        "plain_tokens": plain.token_ids,
        "identical_to_plain": got.token_ids == plain.token_ids,
        "wall_s_with_setup": round(wall, 2),
        "threads_per_party": 1,
    }
