"""`privinfer tee ...` subcommands: init-platform, serve, attest, gateway, verify, demo.

Security assumption: each subcommand keeps to its side: `serve` is the untrusted host (it starts
the enclave process, which alone reads the platform directory); `attest`, `gateway` and `demo`
are clients that pin the root and the measurement before sending anything.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privinfer.errors import PrivinferError
from privinfer.tee.protocol import default_data_dir, default_platform_dir, default_root_cert


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, help="URL of `privinfer tee serve`")
    p.add_argument("--root", default=None, help=f"pinned root PEM (default: {default_root_cert()})")
    p.add_argument(
        "--measurement",
        default=None,
        metavar="HEX",
        help="expected enclave measurement (default: computed from the local code and model)",
    )
    p.add_argument(
        "--model", default="smollm2-135m", help="local model the measurement is computed from"
    )


def cmd_init_platform(args: argparse.Namespace) -> int:
    from privinfer.tee.platform import init_platform

    d = Path(args.dir) if args.dir else default_platform_dir()
    root = Path(args.export_root) if args.export_root else default_root_cert()
    if d.exists():
        raise PrivinferError(f"{d} already exists; remove it to start a new platform")
    d.parent.mkdir(parents=True, exist_ok=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():
        root.unlink()
    init_platform(d, export_root_to=root)
    print(f"software platform created in {d} (keep it private; clients pin {root})")
    return 0


def _config(args: argparse.Namespace) -> dict[str, Any] | None:
    cfg: dict[str, Any] = json.loads(args.config) if args.config else {}
    if args.session_ttl is not None:
        ttl = args.session_ttl
        cfg["session_ttl_s"] = int(ttl) if ttl == int(ttl) else ttl
    if args.max_sessions is not None:
        cfg["max_sessions"] = args.max_sessions
    return cfg or None


def cmd_serve(args: argparse.Namespace) -> int:
    from privinfer.tee.host import serve

    return serve(
        args.model,
        platform_dir=args.platform,
        data_dir=args.data,
        host=args.host,
        port=args.port,
        threads=args.threads,
        config=_config(args),
        debug_enclave=args.debug_enclave,
        trace=args.trace,
    )


def cmd_attest(args: argparse.Namespace) -> int:
    from privinfer.tee.client_cli import attest_cli

    return attest_cli(args)


def cmd_gateway(args: argparse.Namespace) -> int:
    from privinfer.tee.client_cli import make_client
    from privinfer.tee.gateway import run_gateway

    return run_gateway(make_client(args), model_name=args.model, host=args.host, port=args.port)


def cmd_verify(args: argparse.Namespace) -> int:
    from privinfer.tee.verify_cli import run_verify

    return run_verify(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from privinfer.bench.tee_demo import run_demo

    return run_demo(args.prompt, max_new_tokens=args.max_tokens, threads=args.threads)


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `privinfer tee` and its subcommands to the top-level parser."""
    from privinfer.tee.verify_cli import add_verify_arguments

    tee = sub.add_parser("tee", help="TEE mode: platform, enclave server, attestation, gateway")
    tsub = tee.add_subparsers(dest="tee_command", required=True)

    p = tsub.add_parser("init-platform", help="create the software TEE platform (keys, root)")
    p.add_argument(
        "--dir", default=None, help=f"platform directory (default: {default_platform_dir()})"
    )
    p.add_argument("--export-root", default=None, help="where to write the root PEM for clients")
    common(p)
    p.set_defaults(func=cmd_init_platform)

    p = tsub.add_parser("serve", help="start the enclave process and its HTTP host")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument(
        "--platform", default=None, help=f"platform dir (default: {default_platform_dir()})"
    )
    p.add_argument("--data", default=None, help=f"sealed-model dir (default: {default_data_dir()})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8470)
    p.add_argument("--session-ttl", type=float, default=None, help="seconds (measured config)")
    p.add_argument("--max-sessions", type=int, default=None, help="(measured config)")
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--debug-enclave", action="store_true", help="debug identity (clients refuse it)"
    )
    p.add_argument("--trace", default=None, help=argparse.SUPPRESS)
    common(p)
    p.set_defaults(func=cmd_serve)

    p = tsub.add_parser("attest", help="attest a server and print the verified claims")
    _client_args(p)
    common(p)
    p.set_defaults(func=cmd_attest)

    p = tsub.add_parser(
        "gateway", help="local OpenAI-compatible API in front of an attested enclave"
    )
    _client_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8471)
    common(p)
    p.set_defaults(func=cmd_gateway)

    p = tsub.add_parser("verify", help="verify hardware or software evidence offline")
    add_verify_arguments(p)
    p.set_defaults(func=cmd_verify)

    p = tsub.add_parser("demo", help="local platform + enclave, attest, answer one prompt, stop")
    p.add_argument("prompt", nargs="?", default="What is the capital of France?")
    p.add_argument("--max-tokens", type=int, default=64)
    common(p)
    p.set_defaults(func=cmd_demo)
