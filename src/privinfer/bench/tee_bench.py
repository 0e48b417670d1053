"""TEE benchmark: attestation + handshake latency and per-token decode through client -> host -> enclave vs plain.

Security assumption: none beyond the TEE mode's own; the benchmark starts a throw-away software
platform and enclave in a temporary directory (removed afterwards) and attests it like any client.
The enclave runs at the same torch thread count as the in-process plain engine it is compared to.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import privinfer
from privinfer.bench.plain import ours_decode, prompt_ids
from privinfer.tee.client import TeeClient, TeeResult
from privinfer.tee.local import LocalServer

TARGET_ATTEST_HANDSHAKE_S = 0.050
TARGET_DECODE_RATIO = 1.10


def bench_tee(
    runs: int = 5, decode_steps: int = 16, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Medians over `runs` (interleaved tee/plain): attest+handshake, per-token decode, their ratio."""
    say = progress or (lambda _m: None)
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="privinfer-bench-tee-"))
    srv = LocalServer(
        platform_dir=tmp / "platform",
        data_dir=tmp / "data",
        root=tmp / "root.pem",
        threads=threads,
        stdout=None,
    )
    try:
        say("starting the enclave")
        t0 = time.perf_counter()
        srv.start()
        start_s = time.perf_counter() - t0
        lm = privinfer.load("smollm2-135m", threads=threads)
        ids = prompt_ids(lm, 32)
        client = TeeClient(srv.url, root_cert=srv.root, model_file=lm.source)
        req = {"prompt_ids": ids, "max_new_tokens": decode_steps + 1, "temperature": 0.0}
        # warm-up both paths once (connections, caches)
        s = client.attest()
        for _ in s.stream(dict(req, max_new_tokens=2)):
            pass
        s.close()
        ours_decode(lm, ids, 2)
        att, hs, both, tee_tok, tee_first, encl_tok, plain_tok, plain_prefill = (
            [] for _ in range(8)
        )
        for r in range(runs):
            say(f"run {r + 1}/{runs}")
            s = client.attest()
            res = TeeResult()
            for _ in s.stream(req, res):
                pass
            s.close()
            att.append(s.attest_s)
            hs.append(s.handshake_s)
            both.append(s.attest_s + s.handshake_s)
            if len(res.token_s) < decode_steps:
                raise RuntimeError("the benchmark prompt stopped early")
            tee_tok.append(statistics.median(res.token_s))
            tee_first.append(res.first_token_s)
            encl_tok.append(statistics.median(res.enclave["token_s"]))
            prefill, per = ours_decode(lm, ids, decode_steps)
            plain_tok.append(per)
            plain_prefill.append(prefill)
        client.close()
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    ratio = med(tee_tok) / med(plain_tok)
    return {
        "mode": "tee",
        "platform": "software",
        "threads": threads,
        "runs": runs,
        "decode_steps": decode_steps,
        "prompt_tokens": len(ids),
        "server_start_s": round(start_s, 3),
        "attest_s_median": round(med(att), 6),
        "handshake_s_median": round(med(hs), 6),
        "attest_handshake_s_median": round(med(both), 6),
        "tee_first_token_s_median": round(med(tee_first), 6),
        "tee_per_token_s_median": round(med(tee_tok), 6),
        "enclave_compute_per_token_s_median": round(med(encl_tok), 6),
        "plain_prefill_s_median": round(med(plain_prefill), 6),
        "plain_per_token_s_median": round(med(plain_tok), 6),
        "decode_ratio_tee_over_plain": round(ratio, 4),
        "targets": {
            "attest_handshake_s": TARGET_ATTEST_HANDSHAKE_S,
            "decode_ratio": TARGET_DECODE_RATIO,
        },
        "meets_targets": {
            "attest_handshake": med(both) <= TARGET_ATTEST_HANDSHAKE_S,
            "decode_ratio": ratio <= TARGET_DECODE_RATIO,
        },
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(bench_tee(progress=lambda m: print(m, file=sys.stderr)), indent=2))
