"""`privinfer mpc ...`: create a cluster, share a model into per-party stores, run a party
(trusts whoever runs init-cluster and share-model: they mint identities and see the weights).

    privinfer mpc init-cluster --out cluster/ --hosts 10.0.0.1:29400 10.0.0.2:29400 10.0.0.3:29400
    privinfer mpc share-model --model smollm2-135m --cluster cluster/cluster.toml --out stores/
    privinfer mpc party --id 0 --cluster cluster/cluster.toml --store stores/party-0
    privinfer generate --mode mpc --cluster cluster/cluster.toml "What is the capital of France?"
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from privinfer.errors import PrivinferError
from privinfer.mpc.runtime import N_PARTIES
from privinfer.net.cluster import DEFAULT_HOSTS, init_cluster, load_cluster

DEFAULT_CLIENT_HOST = "127.0.0.1:29403"  # never dialled: the client only connects out


def cmd_init_cluster(args: argparse.Namespace) -> int:
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
    import privinfer
    from privinfer.mpc.store import share_model

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
    from privinfer.mpc.party_main import run_party

    return run_party(args)


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `privinfer mpc` and its subcommands to the top-level parser."""
    from privinfer.bench.mpc_check import register_check
    from privinfer.mpc.party_main import add_party_args
    from privinfer.mpc.ring import DEFAULT_FRAC_BITS

    register_check(sub, common)  # `privinfer check --mode mpc`: the fixed-point dry run
    mpc = sub.add_parser("mpc", help="MPC mode: cluster, model shares, compute parties")
    msub = mpc.add_subparsers(dest="mpc_command", required=True)

    p = msub.add_parser(
        "init-cluster", help="CA, certificates and cluster.toml (3 parties + client)"
    )
    p.add_argument("--out", default="mpc-cluster", help="folder to write (default: mpc-cluster)")
    p.add_argument("--hosts", nargs="+", default=None, help="host:port of parties 0-2 [client]")
    p.add_argument("--client-host", default=DEFAULT_CLIENT_HOST, help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true")
    common(p)
    p.set_defaults(func=cmd_init_cluster)

    p = msub.add_parser("share-model", help="write each party's weight shares to its own store")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--cluster", default=None, help="cluster.toml the stores are meant for")
    p.add_argument(
        "--out", default="mpc-stores", help="folder for party-0/, party-1/, party-2/ (mpc-stores)"
    )
    p.add_argument("--frac-bits", type=int, default=DEFAULT_FRAC_BITS)
    common(p)
    p.set_defaults(func=cmd_share_model)

    p = msub.add_parser("party", help="run one compute party (its own process)")
    add_party_args(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_party)
