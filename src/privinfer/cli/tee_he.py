"""`privinfer tee+he serve`: the tee+he HE server and (unless --enclave-url) its refresh enclave.

Security assumption: the server process holds the weights, its TLS identities and the enclave's
launcher role; it never holds a client's secret key (clients release it to the enclave over an
attested channel, teehe.client). As root the enclave runs as its own user (`--enclave-user`,
default privinfer-enclave); `--insecure-same-user` keeps one user and the host is then not kept
from the key. `--dir` holds the clients' CA and identity (certs/), the enclave's CA
(enclave-certs/), the software platform and the root clients pin (root_cert.pem), and stored
jobs (ciphertexts only): hand certs/ and root_cert.pem to clients out of band.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from privinfer.cli import options
from privinfer.cli.main import add_common


def cmd_serve(args: argparse.Namespace) -> int:
    from privinfer.cli.tee import check_port

    options.check_threads(args)
    check_port(args.port)
    options.check_positive("--max-sessions", args.max_sessions)
    options.check_model(args.model)
    import privinfer
    from privinfer.teehe.launch import serve_with_enclave

    model = privinfer.load(args.model, threads=args.threads)

    def ready(port: int) -> None:
        if args.ready_file:
            Path(args.ready_file).write_text(str(port))

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    folder = Path(args.dir) if args.dir else Path.home() / ".config" / "privinfer" / "tee+he"
    try:
        serve_with_enclave(
            model,
            folder,
            args.port,
            host=args.host,
            enclave_url=args.enclave_url,
            enclave_certs=Path(args.enclave_certs) if args.enclave_certs else None,
            insecure_same_user=args.insecure_same_user,
            ready=ready,
            max_sessions=args.max_sessions,
        )
    finally:
        if args.ready_file:
            Path(args.ready_file).unlink(missing_ok=True)
    return 0


def cmd_enclave(args: argparse.Namespace) -> int:
    """Run a refresh enclave on its own (for `tee+he serve --enclave-url` on another host)."""
    from privinfer.cli.tee import check_port
    from privinfer.teehe.launch import ensure_platform, start

    check_port(args.port)
    folder = Path(args.dir) if args.dir else Path.home() / ".config" / "privinfer" / "tee+he"
    folder.mkdir(parents=True, exist_ok=True)
    ensure_platform(folder / "platform")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    enclave = start(folder / "platform", folder / "enclave-certs", host=args.host, port=args.port,
                    insecure_same_user=args.insecure_same_user)  # fmt: skip
    try:
        if args.ready_file:
            Path(args.ready_file).write_text(str(enclave.port))
        print(f"refresh enclave on {enclave.url}; servers use --enclave-url {enclave.url} "
              f"--enclave-certs {folder / 'enclave-certs'}", file=sys.stderr)  # fmt: skip
        return enclave.proc.wait()
    finally:
        enclave.stop()


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(0)


def register(sub: Any) -> None:
    """Add `privinfer tee+he` and its subcommand."""
    group = sub.add_parser(
        "tee+he", help="tee+he hybrid: HE server with an attested refresh enclave"
    )
    group_sub = group.add_subparsers(dest="teehe_command", required=True, metavar="COMMAND")
    s = group_sub.add_parser("serve", help="serve a model with a refresh enclave")
    s.add_argument("--model", default="minilm-l6", help="model to serve")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=29600, help="port to listen on")
    s.add_argument("--dir", default=None, help="state folder (default: ~/.config/privinfer/tee+he)")
    s.add_argument(
        "--enclave-url",
        default=None,
        help="host:port of a running refresh enclave (default: start one)",
    )
    s.add_argument(
        "--enclave-certs",
        default=None,
        help="the enclave CA folder, needed with --enclave-url (default: none)",
    )
    s.add_argument(
        "--insecure-same-user",
        action="store_true",
        help="run the local enclave as this user (default: as its own user; needs root)",
    )
    s.add_argument(
        "--max-sessions", type=int, default=4, metavar="N", help="connections served at once"
    )
    s.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    add_common(s)
    s.set_defaults(func=cmd_serve)
    e = group_sub.add_parser("enclave", help="run a refresh enclave alone (another host)")
    e.add_argument("--host", default="127.0.0.1", help="address to listen on")
    e.add_argument("--port", type=int, default=29601, help="port to listen on")
    e.add_argument("--dir", default=None, help="state folder (default: ~/.config/privinfer/tee+he)")
    e.add_argument(
        "--insecure-same-user",
        action="store_true",
        help="run the enclave as this user (default: as its own user; needs root)",
    )
    e.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    e.set_defaults(func=cmd_enclave)
