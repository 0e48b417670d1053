"""`privinfer tee demo` (`make run` in tee mode): local platform + enclave, attest, stream one answer, stop.

Security assumption: a one-machine demonstration. The platform directory and the exported root
live under ~/.cache/privinfer/tee (or $PRIVINFER_TEE_PLATFORM / $PRIVINFER_TEE_ROOT); the client
still verifies the quote against that pinned root and the measurement it computes itself, and
the prompt leaves the client only encrypted. The answer goes to stdout, everything else to stderr.
"""

from __future__ import annotations

import sys
import time

import httpx

from privinfer.errors import PrivinferError
from privinfer.tee.client import TeeClient, claims_summary, run_generation
from privinfer.tee.local import LocalServer

DEFAULT_PROMPT = "What is the capital of France?"


def run_demo(
    prompt: str = DEFAULT_PROMPT, *, max_new_tokens: int = 64, threads: int | None = None
) -> int:
    """Start serve in the background, attest, stream the answer, shut everything down."""
    from privinfer.models.registry import resolve

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

            def write(text: str) -> None:
                sys.stdout.write(text)
                sys.stdout.flush()

            try:
                out = run_generation(session, request, write)
            finally:
                session.close()
        sys.stdout.write("\n")
        sys.stdout.flush()
        print(
            f"privinfer tee demo: attest {out['attest_s'] * 1000:.1f} ms, first token "
            f"{out['first_token_s'] * 1000:.0f} ms, {out['tokens_per_s']:.1f} tokens/s; stopping",
            file=sys.stderr,
            flush=True,
        )
    return 0


def main() -> int:
    from privinfer.cli.main import main as cli_main

    return cli_main(["tee", "demo", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
