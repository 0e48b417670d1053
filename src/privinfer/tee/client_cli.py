"""Command-line client of a TEE server: `generate --mode tee --server URL` and `tee attest`.

Security assumption: the pinned root (`--root`, $PRIVINFER_TEE_ROOT or the one `tee init-platform`
exported to the cache) and the expected measurement (`--measurement`, $PRIVINFER_TEE_MEASUREMENT
or computed from the local code, config and model) are trusted; the server is not. Claims go to
stderr, the answer to stdout only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from privinfer.errors import PrivinferError
from privinfer.tee.client import Session, TeeClient, claims_summary
from privinfer.tee.protocol import default_root_cert


def make_client(args: argparse.Namespace) -> TeeClient:
    """A TeeClient from CLI args (server, root, measurement, model), with the documented defaults."""
    root = getattr(args, "root", None) or str(default_root_cert())
    if not os.path.isfile(root):
        raise PrivinferError(
            f"no pinned root certificate at {root}: pass --root or run `privinfer tee init-platform`"
        )
    measurement = getattr(args, "measurement", None) or os.environ.get("PRIVINFER_TEE_MEASUREMENT")
    model_file = None
    if not measurement:
        from privinfer.models.registry import resolve

        model_file = resolve(getattr(args, "model", None) or "smollm2-135m")[1]
    try:
        return TeeClient(
            args.server, root_cert=root, measurement=measurement, model_file=model_file
        )
    except ValueError:
        raise PrivinferError("--measurement must be 96 hex digits (SHA-384)") from None


@contextmanager
def _reachable(url: str) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise PrivinferError(
            f"cannot reach the TEE server at {url} ({type(exc).__name__})"
        ) from None


def attest_cli(args: argparse.Namespace) -> int:
    """`privinfer tee attest --server URL`: verify a fresh quote and print the claims."""
    with make_client(args) as client, _reachable(args.server):
        session = client.attest()
        session.close()
    claims = session.claims
    if args.json:
        out = claims.to_json()
        out.update(attest_s=round(session.attest_s, 6), session_id=session.sid.hex())
        print(json.dumps(out, indent=2))
        return 0
    print(claims_summary(claims))
    print(f"  measurement {claims.measurement.hex()}")
    for name, value in claims.components.items():
        print(f"  {name:<11} {value.hex()}")
    print(f"  signer      {claims.signer.hex()} (not pinned)")
    print(f"  issued_at   {claims.issued_at.isoformat() if claims.issued_at else '-'}")
    print(f"  attest      {session.attest_s * 1000:.1f} ms (fresh 32-byte nonce)")
    for line in claims.checked:
        print(f"  checked     {line}")
    for line in claims.not_checked:
        print(f"  NOT checked {line}")
    return 0


def run_generation(session: Session, request: dict[str, Any], write: Any | None) -> dict[str, Any]:
    """Stream one request; `write(text)` each delta; return ids, text and client-side timings."""
    from privinfer.tee.client import TeeResult

    res = TeeResult()
    t0 = time.perf_counter()
    for msg in session.stream(request, res):
        if write is not None and msg.get("text"):
            write(msg["text"])
    total = time.perf_counter() - t0
    med = statistics.median(res.token_s) if res.token_s else None
    return {
        "mode": "tee",
        "text": res.text,
        "token_ids": res.token_ids,
        "prompt_tokens": res.enclave.get("prompt_tokens"),
        "new_tokens": len(res.token_ids),
        "attest_s": round(session.attest_s, 6),
        "handshake_s": round(session.handshake_s, 6),
        "first_token_s": round(res.first_token_s, 6),
        "per_token_s_median": round(med, 6) if med is not None else None,
        "tokens_per_s": round(len(res.token_s) / sum(res.token_s), 3) if res.token_s else 0.0,
        "total_s": round(total, 6),
        "stop_reason": res.stop_reason,
        "enclave_prefill_s": res.enclave.get("prefill_s"),
        "enclave_queue_s": res.enclave.get("queue_s"),
    }


def generate_cli(args: argparse.Namespace) -> int:
    """`privinfer generate --mode tee --server URL PROMPT`: claims on stderr, answer on stdout."""
    request = {
        "prompt": args.prompt,
        "chat": not args.raw,
        "max_new_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    with make_client(args) as client, _reachable(args.server):
        session = client.attest()
        print(claims_summary(session.claims), file=sys.stderr, flush=True)

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        try:
            out = run_generation(session, request, None if args.json else write)
        finally:
            session.close()
    if args.json:
        out["measurement"] = session.claims.measurement.hex()
        print(json.dumps(out))
    else:
        sys.stdout.write("\n")
    return 0
