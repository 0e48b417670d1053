"""`privinfer bench he-smollm2`: the whole SmolLM2-135M generating under CKKS, measured.

Client and server run as two processes over mutually authenticated TLS (the same path as
`privinfer generate --mode he`): the server holds the weights, the client the secret key and
the prompt. The run is long (tens of minutes per token on 2 cores), so it is one generation of
`--steps` + 1 greedy tokens (default 3) from one raw prompt; the plain engine generates the same
tokens first, and the row says whether HE's are identical.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import privinfer
from privinfer.bench.fidelity import raise_net_unsupported

Say = Callable[[str], None]
PROMPT = "The capital of France is"


def workload_he_smollm2(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    if args.net != "none":
        raise_net_unsupported()
    tokens = 2 if args.quick else (args.steps or 2) + 1
    lm = privinfer.load("smollm2-135m")
    plain = lm.generate(PROMPT, max_new_tokens=tokens, chat=False)
    say(
        f"he-smollm2: SmolLM2-135M under CKKS, {len(plain.token_ids)} greedy tokens after a "
        f"{plain.stats.prompt_tokens}-token raw prompt, client and server as two processes "
        "over TLS (about 15 minutes of prefill, then ~12 minutes per token)"
    )
    t0 = time.perf_counter()
    he = lm.generate(PROMPT, max_new_tokens=tokens, chat=False, mode="he")
    wall = time.perf_counter() - t0
    st = he.stats
    decode = statistics.median(st.token_s) if st.token_s else None
    cost = dict(st.details.get("he", {}))
    r = {
        "prompt_tokens": st.prompt_tokens,
        "new_tokens": len(he.token_ids),
        "identical_to_plain": he.token_ids == plain.token_ids,
        "prefill_s": round(st.prefill_s, 1),
        "decode_s_per_token": round(decode, 1) if decode is not None else None,
        "token_s": [round(s, 1) for s in st.token_s],
        "wall_s": round(wall, 1),
        "plain_prefill_s": round(plain.stats.prefill_s, 4),
        "plain_decode_s_per_token": round(statistics.median(plain.stats.token_s), 4)
        if plain.stats.token_s
        else None,
        **cost,
    }
    how = (
        f"2 processes, TLS, {r['prompt_tokens']}-token raw prompt, N=16384, "
        f"{cost.get('rounds', '?')} refresh rounds in all, "
        f"{cost.get('bytes_to_server', 0) / 1e6:.0f} MB to server, "
        f"{cost.get('bytes_to_client', 0) / 1e6:.0f} MB back; greedy tokens "
        + ("identical to plain" if r["identical_to_plain"] else "DIFFER from plain")
    )
    rows = [
        [
            f"SmolLM2-135M prefill, {r['prompt_tokens']} tokens (incl. first token)",
            f"{r['prefill_s']:.0f} s",
            f"plain {r['plain_prefill_s'] * 1000:.0f} ms",
            f"{r['prefill_s'] / r['plain_prefill_s']:.0f}x",
            how,
        ]
    ]
    if decode is not None and r["plain_decode_s_per_token"]:
        rows.append(
            [
                "SmolLM2-135M decode per token",
                f"{decode:.0f} s",
                f"plain {r['plain_decode_s_per_token'] * 1000:.0f} ms",
                f"{decode / r['plain_decode_s_per_token']:.0f}x",
                how,
            ]
        )
    return {"he-smollm2": {**r, "rows": rows}, "plain": None}


WORKLOADS: dict[str, Callable[[argparse.Namespace, Say], dict[str, Any]]] = {
    "he-smollm2": workload_he_smollm2,
}
