"""TEE mode for the Python API: `lm.stream(prompt, mode="tee", server=URL)` attests, then streams encrypted.

Security assumption: the client pins the root (`root_cert=`, default the exported one in the
cache) and computes the expected measurement from its own model file and code (or takes
`measurement=`); nothing leaves this process before the quote verified. With no `server`, a local
enclave + host is started for the call (convenience only) and stopped afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from privinfer.errors import InputError
from privinfer.modes import register


def tee_generate(
    model: Any,
    prompt_ids: list[int],
    *,
    sampler: Any,
    max_new_tokens: int,
    stats: Any,
    server: str | None = None,
    root_cert: bytes | str | Path | None = None,
    measurement: bytes | str | None = None,
    threads: int | None = None,
    **unknown: Any,
) -> Iterator[int]:
    """Yield token ids from an attested enclave; fill `stats` like `generate_ids` (client-side times)."""
    if unknown:
        raise InputError(f"mode tee does not take {', '.join(sorted(unknown))}")
    import torch

    from privinfer.tee.client import TeeClient, TeeResult
    from privinfer.tee.local import LocalServer
    from privinfer.tee.protocol import default_root_cert

    local = None
    if server is None:
        local = LocalServer(threads=threads or torch.get_num_threads()).start()
        server, root_cert = local.url, local.root
    client = TeeClient(
        server,
        root_cert=root_cert or default_root_cert(),
        measurement=measurement,
        model_file=None if measurement else model.source,
    )
    try:
        session = client.attest()
        req = {
            "prompt_ids": list(prompt_ids),
            "max_new_tokens": max_new_tokens,
            "temperature": sampler.temperature,
            "top_p": sampler.top_p,
            "seed": sampler.seed,
        }
        stats.prompt_tokens = len(prompt_ids)
        res = TeeResult()
        t0 = last = time.perf_counter()
        try:
            for msg in session.stream(req, res):
                now = time.perf_counter()
                if stats.new_tokens == 0:
                    stats.prefill_s = now - t0
                else:
                    stats.token_s.append(now - last)
                last = now
                stats.new_tokens += 1
                yield int(msg["id"])
        finally:
            session.close()
        stats.stop_reason = res.stop_reason
    finally:
        client.close()
        if local is not None:
            local.stop()


register("tee", generate=tee_generate)
