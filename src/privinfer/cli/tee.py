"""`privinfer tee ...`: init-platform, serve, attest, gateway, demo (verify is in
cli/tee_verify.py); and the client side of `privinfer generate --mode tee --server URL`.

Security assumption: each subcommand keeps to its side: `serve` is the untrusted host (it starts
the enclave process, which alone reads the platform directory); `attest`, `gateway`, `demo` and
the generate client pin the root and the measurement before sending anything. Claims go to
stderr, answers to stdout only. Evidence that fails verification exits 3 (see `privinfer --help`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from privinfer.cli import options
from privinfer.cli.main import add_common
from privinfer.cli.tee_verify import add_verify_arguments, run_verify
from privinfer.errors import InputError, PrivinferError
from privinfer.tee.evidence.detect import EVIDENCE_TYPES
from privinfer.tee.isolation import DEFAULT_ENCLAVE_USER, PROVIDERS
from privinfer.tee.protocol import (
    DEFAULT_MAX_SESSIONS_PER_CLIENT,
    default_data_dir,
    default_platform_dir,
    default_root_cert,
)


# --- clients: attest, gateway, generate --mode tee --server -----------------------------------
def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, help="URL of `privinfer tee serve`")
    p.add_argument("--root", default=None, help=f"pinned root PEM (default: {default_root_cert()})")
    p.add_argument(
        "--measurement",
        default=None,
        metavar="HEX",
        help="expected enclave measurement (default: $PRIVINFER_TEE_MEASUREMENT, else computed "
        "from the local code and --model)",
    )
    p.add_argument(
        "--model", default="smollm2-135m", help="local model the measurement is computed from"
    )
    p.add_argument(
        "--hardware",
        choices=EVIDENCE_TYPES,
        default=None,
        help="accept only this hardware evidence, against the pinned vendor root (default: the "
        "software platform's --root); needs --measurement",
    )
    p.add_argument(
        "--collateral",
        default=None,
        metavar="JSON_OR_DIR",
        help="Intel DCAP collateral file or cache directory (default: none; --hardware sgx/tdx "
        "refuses the quote without it)",
    )
    p.add_argument(
        "--certs",
        nargs="+",
        default=[],
        metavar="PEM_OR_DER",
        help="certificates the evidence does not carry (--hardware snp: VCEK, ASK+ARK)",
    )


def _client(
    server: str, root: str | None, measurement: str | None, model: str, args: Any = None
) -> Any:
    from privinfer.tee.attestation import HardwareTrust
    from privinfer.tee.client import client_for

    trust = None
    if args is not None and getattr(args, "hardware", None):
        from privinfer.tee.verify import read_file

        trust = HardwareTrust(
            args.hardware,
            collateral=args.collateral,
            certs=tuple(read_file(p) for p in args.certs),
        )
    return client_for(server, root=root, measurement=measurement, model=model, trust=trust)


def cmd_attest(args: argparse.Namespace) -> int:
    """Verify a fresh quote from --server and print the claims."""
    from privinfer.tee.client import claims_summary, reachable

    with _client(args.server, args.root, args.measurement, args.model, args) as client:
        with reachable(args.server):
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


def generate_remote(args: argparse.Namespace, opts: dict[str, Any]) -> int:
    """`privinfer generate --mode tee --server URL PROMPT`: claims on stderr, answer on stdout."""
    from privinfer.tee.client import claims_summary, reachable, run_generation

    request = {
        "prompt": args.prompt,
        "chat": not args.raw,
        "max_new_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    server = opts["server"]
    root = opts.get("root_cert")
    with _client(server, root, opts.get("measurement"), args.model) as client:
        with reachable(server):
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


def cmd_gateway(args: argparse.Namespace) -> int:
    """`privinfer tee gateway`: `privinfer serve --mode tee --server URL` under its old name."""
    from privinfer.cli.serve import run_proxy

    check_port(args.port)
    options.check_threads(args)
    options.check_model(args.model)
    # the same checks and trust as `tee attest`: root file, measurement hex, --hardware trust
    client = _client(args.server, args.root, args.measurement, args.model, args)
    client.close()
    measurement = args.measurement or os.environ.get("PRIVINFER_TEE_MEASUREMENT")
    root = client.root if getattr(args, "hardware", None) else args.root  # HardwareTrust
    given = {"server": args.server, "root_cert": root, "measurement": measurement}
    given = options.check_mode_options("tee", "generate", {k: v for k, v in given.items() if v})
    return run_proxy(
        "tee",
        model=args.model,
        embed_model=None,
        given={k: v for k, v in given.items() if v is not None},
        host=args.host,
        port=args.port,
        threads=args.threads,
    )


# --- platform, server, demo -------------------------------------------------------------------
def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be between 0 and 65535 (got {port})")


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
    try:
        cfg: dict[str, Any] = json.loads(args.config) if args.config else {}
    except json.JSONDecodeError:
        raise InputError("--config must be a JSON object") from None
    if args.session_ttl is not None:
        ttl = args.session_ttl
        cfg["session_ttl_s"] = int(ttl) if ttl == int(ttl) else ttl
    if args.max_sessions is not None:
        cfg["max_sessions"] = args.max_sessions
    return cfg or None


def _detected_platform() -> str:
    from privinfer.tee.tsm import detect_platform

    return detect_platform()


def cmd_serve(args: argparse.Namespace) -> int:
    import math

    options.check_threads(args)
    check_port(args.port)
    if args.session_ttl is not None and not (
        math.isfinite(args.session_ttl) and args.session_ttl > 0
    ):
        raise InputError(
            f"--session-ttl must be a finite number of seconds > 0 (got {args.session_ttl})"
        )
    if args.max_sessions is not None:
        options.check_positive("--max-sessions", args.max_sessions)
    options.check_positive("--max-sessions-per-client", args.max_sessions_per_client)
    if args.enclave_user is not None and args.insecure_same_user:
        raise InputError("--enclave-user and --insecure-same-user exclude each other")
    config = _config(args)
    options.check_model(args.model)
    from privinfer.tee.host import serve

    return serve(
        args.model,
        platform=args.platform or _detected_platform(),
        user=args.enclave_user,
        insecure_same_user=args.insecure_same_user,
        platform_dir=args.platform_dir,
        data_dir=args.data,
        host=args.host,
        port=args.port,
        threads=args.threads,
        config=config,
        debug_enclave=args.debug_enclave,
        trace=args.trace,
        max_sessions_per_client=args.max_sessions_per_client,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    options.check_threads(args)
    options.check_positive("--max-tokens", args.max_tokens)
    options.check_text(args.prompt, "the prompt")
    from privinfer.bench.tee_demo import run_demo

    return run_demo(args.prompt, max_new_tokens=args.max_tokens, threads=args.threads)


def register(sub: Any) -> None:
    """Add `privinfer tee` and its subcommands."""
    tee = sub.add_parser("tee", help="TEE mode: platform, enclave server, attestation, gateway")
    tsub = tee.add_subparsers(dest="tee_command", required=True, metavar="COMMAND")

    p = tsub.add_parser("init-platform", help="create the software TEE platform (keys, root)")
    p.add_argument(
        "--dir", default=None, help=f"platform directory (default: {default_platform_dir()})"
    )
    p.add_argument(
        "--export-root",
        default=None,
        help=f"where to write the root PEM for clients (default: {default_root_cert()})",
    )
    add_common(p, threads=False)
    p.set_defaults(func=cmd_init_platform)

    p = tsub.add_parser("serve", help="start the enclave process and its HTTP host")
    p.add_argument("--model", default="smollm2-135m", help="model the enclave serves")
    p.add_argument(
        "--platform",
        default=None,
        choices=sorted(PROVIDERS),
        help="TEE platform that isolates the enclave and signs its quotes (default: detected: "
        "tdx or snp where configfs TSM offers it, sgx-gramine under Gramine, else software)",
    )
    p.add_argument(
        "--platform-dir",
        default=None,
        metavar="DIR",
        help=f"software platform directory (default: {default_platform_dir()})",
    )
    p.add_argument(
        "--enclave-user",
        default=None,
        metavar="NAME",
        help=f"OS user the enclave runs as; needs root (default: {DEFAULT_ENCLAVE_USER}, "
        "created if missing)",
    )
    p.add_argument(
        "--insecure-same-user",
        action="store_true",
        help="run the enclave as this process's user: the host can then read the platform keys "
        "and the enclave's memory (threat rows: host not protected)",
    )
    p.add_argument("--data", default=None, help=f"sealed-model dir (default: {default_data_dir()})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8470, help="port to listen on (0: any free port)")
    p.add_argument(
        "--session-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="session lifetime from attestation, part of the measured config "
        "(default: the enclave's, 300)",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        metavar="N",
        help="sessions with a completed handshake at once, part of the measured config "
        "(default: the enclave's, 64)",
    )
    p.add_argument(
        "--max-sessions-per-client",
        type=int,
        default=DEFAULT_MAX_SESSIONS_PER_CLIENT,
        metavar="N",
        help="sessions (pending or established) one client address may hold; enforced by the "
        f"untrusted host, not measured (default: {DEFAULT_MAX_SESSIONS_PER_CLIENT})",
    )
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--debug-enclave", action="store_true", help="debug identity (clients refuse it)"
    )
    p.add_argument("--trace", default=None, help=argparse.SUPPRESS)
    add_common(p)
    p.set_defaults(func=cmd_serve)

    p = tsub.add_parser("attest", help="attest a server and print the verified claims")
    _client_args(p)
    add_common(p, threads=False)
    p.set_defaults(func=cmd_attest)

    p = tsub.add_parser(
        "gateway",
        help="local OpenAI-compatible API in front of an attested enclave "
        "(= privinfer serve --mode tee --server URL)",
    )
    _client_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8471, help="port to listen on")
    add_common(p)
    p.set_defaults(func=cmd_gateway)

    p = tsub.add_parser(
        "verify",
        help="verify hardware or software evidence offline",
        description="Verify evidence against pinned vendor roots. Exit 0: verified; 3: rejected "
        "(one line, or a JSON object with --json); 2: unreadable file or malformed argument.",
    )
    add_verify_arguments(p)
    p.set_defaults(func=run_verify)

    p = tsub.add_parser("demo", help="local platform + enclave, attest, answer one prompt, stop")
    p.add_argument(
        "prompt", nargs="?", default="What is the capital of France?", help="the question"
    )
    p.add_argument(
        "--max-tokens", type=int, default=64, metavar="N", help="most tokens to generate"
    )
    add_common(p)
    p.set_defaults(func=cmd_demo)
