"""`privinfer he ...` subcommands: `he serve` runs an HE server for one model.

Security assumption: the server process holds the model weights and its TLS identity; it never
receives a secret key (see `he.server`). `--certs` holds a 2-party CA; the CA key and the client
identity in it must be handed to clients out of band (on one machine: the same folder).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from privinfer.cli import options
from privinfer.cli.main import add_common
from privinfer.errors import InputError
from privinfer.he.limits import DEFAULT_MAX_SESSIONS


def cmd_serve(args: argparse.Namespace) -> int:
    from privinfer.cli.tee import check_port

    options.check_threads(args)
    check_port(args.port)
    options.check_positive("--max-sessions", args.max_sessions)
    if args.sessions < 0:
        raise InputError(f"--sessions must be 0 (forever) or more (got {args.sessions})")
    options.check_model(args.model)
    import privinfer
    from privinfer.he.server import serve
    from privinfer.he.transport import default_cert_dir, ensure_identities

    certs = Path(args.certs) if args.certs else default_cert_dir()
    cluster = ensure_identities(certs, args.port)
    model = privinfer.load(args.model, threads=args.threads)

    def ready(port: int) -> None:
        if args.ready_file:
            Path(args.ready_file).write_text(str(port))

    # SIGTERM ends the server like Ctrl-C: running session workers are stopped, not orphaned,
    # and the ready file goes; a second SIGTERM (`timeout` sends two) does not cut that short
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        serve(
            model,
            cluster,
            args.host,
            args.port,
            sessions=args.sessions,
            ready=ready,
            max_sessions=args.max_sessions,
        )
    finally:
        if args.ready_file:
            Path(args.ready_file).unlink(missing_ok=True)
    return 0


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(0)


def register(sub: Any) -> None:
    """Add `privinfer he` and its subcommands."""
    he = sub.add_parser("he", help="homomorphic-encryption (CKKS) tools")
    he_sub = he.add_subparsers(dest="he_command", required=True, metavar="COMMAND")
    s = he_sub.add_parser("serve", help="serve a model to HE clients over mutual TLS")
    s.add_argument("--model", default="minilm-l6", help="model to serve")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=29500, help="port to listen on")
    s.add_argument(
        "--certs", default=None, help="identity folder (default: ~/.config/privinfer/he)"
    )
    s.add_argument(
        "--sessions", type=int, default=0, metavar="N", help="exit after N sessions (0: forever)"
    )
    s.add_argument(
        "--max-sessions",
        type=int,
        default=DEFAULT_MAX_SESSIONS,
        metavar="N",
        help="sessions served at once, each in its own process (a MiniLM session takes 5-10 GB); "
        "clients beyond it get a 'server busy, try later' error",
    )
    s.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    add_common(s)
    s.set_defaults(func=cmd_serve)
