"""`privinfer mpc+he ...`: `init-cluster` writes the two-party CA and identities (server =
party 0, client = party 1), `serve` runs the model owner's server (party 0: it holds the
weights and never sends them; semi-honest 2PC with the client, no third party).

    privinfer mpc+he init-cluster --out c/ --hosts 10.0.0.1:29600 10.0.0.2:29601
    privinfer mpc+he serve --model smollm2-135m --cluster c/
    privinfer generate --mode mpc+he --cluster c/ "What is the capital of France?"
Give the server party-0.pem/.key, the client party-1.pem/.key, both cluster.toml and ca.pem;
keep ca.key off both.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from privinfer.cli import options
from privinfer.cli.main import add_common
from privinfer.errors import InputError

DEFAULT_HOSTS = ("127.0.0.1:29600", "127.0.0.1:29601")


def cmd_init_cluster(args: argparse.Namespace) -> int:
    from privinfer.net.cluster import init_cluster

    hosts = list(args.hosts or DEFAULT_HOSTS)
    if len(hosts) != 2:
        raise InputError("give two host:port values: the server's, then the client's")
    cluster = init_cluster(args.out, hosts, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"cluster": str(cluster.path)}))
    else:
        print(f"wrote {cluster.path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    options.check_threads(args)
    options.check_model(args.model)
    if args.sessions < 0:
        raise InputError(f"--sessions must be 0 (forever) or more (got {args.sessions})")
    options.check_positive("--timeout-s", args.timeout_s)
    if not (Path(args.cluster) / "cluster.toml").exists() and not Path(args.cluster).is_file():
        raise InputError(f"--cluster {args.cluster}: no cluster.toml there")
    import privinfer
    from privinfer.twopc.service import serve

    model = privinfer.load(args.model, threads=args.threads)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def ready() -> None:
        if args.ready_file:
            Path(args.ready_file).write_text("ready")

    failed = serve(
        model, args.cluster, sessions=args.sessions, timeout_s=args.timeout_s, ready=ready
    )
    return 1 if failed else 0


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(0)


def register(sub: Any) -> None:
    """Add `privinfer mpc+he` and its subcommands."""
    grp = sub.add_parser("mpc+he", help="two-party mode (client and model owner): cluster, server")
    gsub = grp.add_subparsers(dest="mpc_he_command", required=True, metavar="COMMAND")
    p = gsub.add_parser("init-cluster", help="CA, certificates and cluster.toml (server + client)")
    p.add_argument("--out", default="mpc-he-cluster", help="folder to write")
    p.add_argument(
        "--hosts",
        nargs=2,
        default=None,
        metavar="HOST:PORT",
        help=f"server, then client (default: {' '.join(DEFAULT_HOSTS)})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing cluster folder")
    add_common(p, threads=False)
    p.set_defaults(func=cmd_init_cluster)

    s = gsub.add_parser("serve", help="run the model owner's server (party 0) over mutual TLS")
    s.add_argument("--model", default="smollm2-135m", help="model to serve")
    s.add_argument("--cluster", required=True, help="two-party cluster folder (init-cluster)")
    s.add_argument(
        "--sessions", type=int, default=0, metavar="N", help="exit after N sessions (0: forever)"
    )
    s.add_argument(
        "--timeout-s", type=float, default=120.0, help="seconds to wait for any one client message"
    )
    s.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    add_common(s)
    s.set_defaults(func=cmd_serve)
