"""`privinfer tee demo` (`make run` in tee mode): local platform + enclave, attest, stream one answer, stop.

Uses the TEE client directly (no CLI); `python -m privinfer.bench.tee_demo` runs it standalone.

Security assumption: a one-machine demonstration. The platform directory and the exported root
live under ~/.cache/privinfer/tee (or $PRIVINFER_TEE_PLATFORM / $PRIVINFER_TEE_ROOT); the client
still verifies the quote against that pinned root and the measurement it computes itself, and
the prompt leaves the client only encrypted. The answer goes to stdout, everything else to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import httpx

from privinfer.errors import PrivinferError
from privinfer.models.registry import resolve
from privinfer.tee.client import TeeClient, TeeResult, claims_summary
from privinfer.tee.local import LocalServer

DEFAULT_PROMPT = "What is the capital of France?"


def run_demo(
    prompt: str = DEFAULT_PROMPT, *, max_new_tokens: int = 64, threads: int | None = None
) -> int:
    """Start serve in the background, attest, stream the answer, shut everything down."""
    model_file = resolve("smollm2-135m")[1]
    t0 = time.perf_counter()
    print("privinfer tee demo: starting the enclave and its host ...", file=sys.stderr, flush=True)
    with LocalServer(threads=threads) as srv:
        print(
            f"privinfer tee demo: server up at {srv.url} in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        with TeeClient(srv.url, root_cert=srv.root, model_file=model_file) as client:
            try:
                session = client.attest()
            except httpx.HTTPError as exc:
                raise PrivinferError(
                    f"cannot reach the local TEE server ({type(exc).__name__})"
                ) from None
            print(claims_summary(session.claims), file=sys.stderr, flush=True)
            request = {"prompt": prompt, "chat": True, "max_new_tokens": max_new_tokens}

            res = TeeResult()
            try:
                for msg in session.stream(request, res):
                    if msg.get("text"):
                        sys.stdout.write(msg["text"])
                        sys.stdout.flush()
            finally:
                session.close()
        sys.stdout.write("\n")
        sys.stdout.flush()
        rate = len(res.token_s) / sum(res.token_s) if res.token_s else 0.0
        print(
            f"privinfer tee demo: attest {session.attest_s * 1000:.1f} ms, first token "
            f"{res.first_token_s * 1000:.0f} ms, {rate:.1f} tokens/s; stopping",
            file=sys.stderr,
            flush=True,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m privinfer.bench.tee_demo [PROMPT] [--max-tokens N] [--threads N]`."""
    p = argparse.ArgumentParser(prog="python -m privinfer.bench.tee_demo")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    try:
        return run_demo(args.prompt, max_new_tokens=args.max_tokens, threads=args.threads)
    except PrivinferError as exc:
        print(f"privinfer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
