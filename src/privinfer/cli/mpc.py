"""`privinfer mpc ...`: create a cluster, share a model into per-party stores, run a party; and
`privinfer check --mode mpc`, the fixed-point dry run (trusts whoever runs init-cluster and
share-model: they mint identities and see the weights).

    privinfer mpc init-cluster --out cluster/ --hosts 10.0.0.1:29400 10.0.0.2:29400 10.0.0.3:29400
    privinfer mpc share-model --model smollm2-135m --cluster cluster/cluster.toml --out stores/
    privinfer mpc party --id 0 --cluster cluster/cluster.toml --store stores/party-0
    privinfer generate --mode mpc --cluster cluster/cluster.toml "What is the capital of France?"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from privinfer.cli import options
from privinfer.cli.main import add_common
from privinfer.errors import InputError, PrivinferError

# Copies that keep `privinfer --help` and argument errors free of torch (tests/cli/test_mpc.py
# checks them against privinfer.mpc.runtime, mpc.ring, net.cluster and mpc.party_main).
N_PARTIES = 3  # = mpc.runtime.N_PARTIES
DEFAULT_FRAC_BITS = 16  # = mpc.ring.DEFAULT_FRAC_BITS
DEFAULT_HOSTS = ("127.0.0.1:29400", "127.0.0.1:29401", "127.0.0.1:29402")  # = net.cluster's
DEFAULT_CLIENT_HOST = "127.0.0.1:29403"  # never dialled: the client only connects out
FRAC_BITS_RANGE = (12, 24)


def _check_frac_bits(f: int) -> None:
    lo, hi = FRAC_BITS_RANGE
    if not lo <= f <= hi:
        raise InputError(f"--frac-bits must lie in [{lo}, {hi}] (got {f})")


def _check_file(flag: str, path: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{flag} {path}: no such file")


def cmd_init_cluster(args: argparse.Namespace) -> int:
    from privinfer.net.cluster import init_cluster

    hosts = list(args.hosts or DEFAULT_HOSTS)
    if len(hosts) == N_PARTIES:
        hosts.append(args.client_host)
    if len(hosts) != N_PARTIES + 1:
        raise PrivinferError("give the three parties' host:port (and optionally the client's).")
    cluster = init_cluster(args.out, hosts, overwrite=args.overwrite)
    out = {
        "cluster": str(cluster.path),
        "parties": [f"{p.host}:{p.port}" for p in cluster.parties[:N_PARTIES]],
        "client_identity": f"party-{N_PARTIES}.pem/.key (endpoint {N_PARTIES})",
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"wrote {out['cluster']}")
        print(
            "give party i: cluster.toml, ca.pem, party-<i>.pem/.key; give the client "
            f"cluster.toml, ca.pem, party-{N_PARTIES}.pem/.key; keep ca.key off all of them."
        )
    return 0


def cmd_share_model(args: argparse.Namespace) -> int:
    options.check_threads(args)
    _check_frac_bits(args.frac_bits)
    if args.cluster:
        _check_file("--cluster", args.cluster)
    options.check_model(args.model)
    import privinfer
    from privinfer.mpc.store import share_model
    from privinfer.net.cluster import load_cluster

    cluster_id = None
    if args.cluster:
        cluster = load_cluster(args.cluster)
        if cluster.n_parties != N_PARTIES + 1:
            raise PrivinferError("the cluster must list 3 parties and the client (4 endpoints).")
        cluster_id = cluster.cluster_id
    model = privinfer.load(args.model, threads=args.threads)

    def progress(msg: str) -> None:
        if not args.json:
            sys.stderr.write(f"\r{msg}")
            sys.stderr.flush()

    share_set = share_model(
        model,
        args.model,
        args.out,
        frac_bits=args.frac_bits,
        progress=progress,
        cluster_id=cluster_id,
    )
    if not args.json:
        sys.stderr.write("\n")
    out = {"model": args.model, "share_set": share_set, "out": args.out}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"share set {share_set}: copy {args.out}/party-<i> to party i only")
    return 0


def cmd_party(args: argparse.Namespace) -> int:
    import math

    if not 0 <= args.id < N_PARTIES:
        raise InputError(f"--id must be 0, 1 or 2 (got {args.id})")
    options.check_threads(args)
    _check_file("--cluster", args.cluster)
    for flag, value in (("--timeout", args.timeout), ("--idle-timeout", args.idle_timeout)):
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"{flag} must be a finite number of seconds > 0 (got {value})")
    if args.sessions is not None:
        options.check_positive("--sessions", args.sessions)
    from privinfer.mpc.party_main import run_party

    return run_party(args)


def cmd_check(args: argparse.Namespace) -> int:
    options.check_threads(args)
    options.check_positive("--tokens", args.tokens)
    _check_frac_bits(args.frac_bits)
    options.check_text(args.prompt, "the prompt")
    options.check_model(args.model)
    from privinfer.bench.mpc_check import cmd_check as run_check

    return run_check(args)


def _register_check(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="fixed-point dry run: per-layer error against plain, greedy agreement"
    )
    p.add_argument("prompt", help="prompt of the dry run (chat template applied unless --raw)")
    p.add_argument("--model", default="smollm2-135m", help="decoder to check")
    p.add_argument("--mode", default="mpc", choices=["mpc"], help="mode to check against plain")
    p.add_argument("--tokens", type=int, default=4, metavar="N", help="greedy tokens to compare")
    p.add_argument(
        "--frac-bits",
        type=int,
        default=DEFAULT_FRAC_BITS,
        metavar="F",
        help=f"fixed-point fraction bits, {FRAC_BITS_RANGE[0]}..{FRAC_BITS_RANGE[1]}",
    )
    p.add_argument("--private-weights", action="store_true", help="share the weights too")
    p.add_argument("--raw", action="store_true", help="no chat template")
    add_common(p)
    p.set_defaults(func=cmd_check)


def register(sub: Any) -> None:
    """Add `privinfer check` and `privinfer mpc` with its subcommands."""
    _register_check(sub)
    mpc = sub.add_parser("mpc", help="MPC mode: cluster, model shares, compute parties")
    msub = mpc.add_subparsers(dest="mpc_command", required=True, metavar="COMMAND")

    p = msub.add_parser(
        "init-cluster", help="CA, certificates and cluster.toml (3 parties + client)"
    )
    p.add_argument("--out", default="mpc-cluster", help="folder to write")
    p.add_argument(
        "--hosts",
        nargs="+",
        default=None,
        metavar="HOST:PORT",
        help=f"parties 0-2 [and the client] (default: {' '.join(DEFAULT_HOSTS)})",
    )
    p.add_argument("--client-host", default=DEFAULT_CLIENT_HOST, help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true", help="replace an existing cluster folder")
    add_common(p, threads=False)
    p.set_defaults(func=cmd_init_cluster)

    p = msub.add_parser("share-model", help="write each party's weight shares to its own store")
    p.add_argument("--model", default="smollm2-135m", help="model to share")
    p.add_argument(
        "--cluster",
        default=None,
        help="cluster.toml the stores are bound to (default: not bound to a cluster)",
    )
    p.add_argument("--out", default="mpc-stores", help="folder for party-0/, party-1/, party-2/")
    p.add_argument(
        "--frac-bits",
        type=int,
        default=DEFAULT_FRAC_BITS,
        metavar="F",
        help="fixed-point fraction bits",
    )
    add_common(p)
    p.set_defaults(func=cmd_share_model)

    p = msub.add_parser("party", help="run one compute party (its own process)")
    add_party_arguments(p)
    p.add_argument(
        "--debug", action="store_true", help="add the traceback to an error (same exit code)"
    )
    p.set_defaults(func=cmd_party)


def add_party_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `privinfer mpc party` (the same as `python -m privinfer.mpc.party_main`)."""
    p.add_argument("--id", type=int, required=True, help="party id: 0, 1 or 2")
    p.add_argument("--cluster", required=True, help="cluster.toml (or its folder)")
    p.add_argument(
        "--store", default=None, help="this party's share store (default: mpc-stores/party-<id>)"
    )
    p.add_argument(
        "--sessions",
        type=int,
        default=None,
        metavar="N",
        help="exit after this many sessions (default: serve until idle)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=7 * 86400.0,
        metavar="SECONDS",
        help="seconds to wait for a session before exiting",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="silence that means a dead peer",
    )
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads")
    p.add_argument(
        "--ready-file",
        default=None,
        help="touch this file once the store is loaded (default: none)",
    )
