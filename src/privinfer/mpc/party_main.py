"""An MPC compute party process: serves client sessions on its own weight shares (semi-honest,
honest majority of three; it sees only shares, public lengths and the public continue bit).

Each session is a fresh TLS mesh with the two other parties and the client; the party derives
its PRF keys from the session's pairwise keys, loads its RShares from its store, runs the shared
model definition through `MpcOps`, keeps the KV cache as shares (one new row per decode step)
and sends its token shares to the client only. Logs carry counters and public ids, never data.

SIGTERM and SIGINT end the party cleanly: the open session's links are closed, its ready file
(if any) is removed, and it exits with 143 or 130 (it creates no other file or socket path).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import PrivinferError
from privinfer.models.costs import peak_rss_mb
from privinfer.models.generate import GenerationStats, decode_loop
from privinfer.models.ops import Sampler
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.prf import PairwiseRandomness
from privinfer.mpc.protocols.onehot import InputCheckError
from privinfer.mpc.runtime import N_PARTIES, Party
from privinfer.mpc.session import (
    CLIENT_ID,
    PROTOCOL,
    MpcSessionError,
    PartyView,
    RemotePort,
    prf_key,
)
from privinfer.mpc.shares import RShare
from privinfer.mpc.store import PartyStore
from privinfer.net.cluster import ClusterConfig, load_cluster
from privinfer.net.lifetime import sigterm_as_exit
from privinfer.net.peer import PeerError
from privinfer.net.tls import connect_parties


def log(pid: int, msg: str) -> None:
    sys.stderr.write(f"privinfer-party {pid}: {msg}\n")
    sys.stderr.flush()


def _check_request(req: dict[str, Any], store: PartyStore, pid: int) -> str | None:
    """None if this party can serve `req`, else a one-sentence reason (public facts only)."""
    if req.get("protocol") != PROTOCOL:
        return f"party {pid} speaks {PROTOCOL}, the client does not."
    if req.get("model") != store.model_id:
        return (
            f"party {pid} holds shares of model {store.model_id!r}, "
            f"not of the requested {req.get('model')!r}."
        )
    want = req.get("share_set")
    if want and want != store.share_set_id:
        return f"party {pid} holds share set {store.share_set_id[:12]}, not the requested {str(want)[:12]}."
    kind = req.get("kind")
    task = store.family.task
    if kind == "generate" and task == "generate":
        n = req.get("n_prompt")
        ctx = int(store.build_config().max_context)
        if not isinstance(n, int) or not 0 < n < ctx:
            return f"the prompt length is outside the model's context of {ctx} tokens."
        return None
    if kind == "embed" and task == "embed":
        lengths = req.get("lengths")
        limit = int(store.build_config().max_positions)
        if not isinstance(lengths, list) or not all(
            isinstance(n, int) and 0 < n <= limit for n in lengths
        ):
            return f"a text length is outside the model's limit of {limit} tokens."
        return None
    return f"party {pid} holds a {store.model_kind} model, which cannot serve {kind!r}."


class _Marks:
    """Rounds, party-to-party bytes, wall time and the process's CPU time between two points
    of a session."""

    def __init__(self, view: PartyView) -> None:
        self.view = view
        self.start = self._now()

    def _now(self) -> tuple[int, int, float, float]:
        stats = self.view.stats
        return (stats.rounds, stats.bytes_sent, time.perf_counter(), time.process_time())

    def lap(self) -> dict[str, float]:
        now = self._now()
        out = {
            "rounds": now[0] - self.start[0],
            "bytes_sent": now[1] - self.start[1],
            "wall_s": round(now[2] - self.start[2], 6),
            "cpu_s": round(now[3] - self.start[3], 4),  # the party process, all its threads
        }
        self.start = now
        return out


def _agree(view: PartyView, store: PartyStore, ok: bool) -> str | None:
    """One round: the parties compare model ids, share-set ids and readiness."""
    pid = view.party_id
    mine = json.dumps({"model": store.model_id, "share_set": store.share_set_id, "ok": ok})
    peers = [j for j in range(N_PARTIES) if j != pid]
    got = view.round({j: mine.encode() for j in peers}, peers)
    others = {}
    for j in peers:
        try:
            others[j] = json.loads(got[j].decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise PeerError(j, "sent a malformed agreement message") from None
    if not all(o.get("ok") for o in others.values()):
        return "another party refused the request."
    if any(
        o.get("share_set") != store.share_set_id or o.get("model") != store.model_id
        for o in others.values()
    ):
        return (
            "the parties hold shares from different models or share sets; "
            "run `privinfer mpc share-model` again for all three parties."
        )
    return None


def _by_op(meter: Any) -> dict[str, dict[str, float]]:
    """Calls, rounds, bytes sent and wall seconds by op class (public counts and timings)."""
    return {
        k: {
            "calls": c.calls,
            "rounds": c.rounds,
            "bytes_sent": c.bytes_sent,
            "wall_s": round(c.wall_s, 4),
        }
        for k, c in meter.totals().items()
    }


def run_session(link: Any, store: PartyStore, pid: int) -> dict[str, Any]:
    """Serve one client session on `link` (a TlsPeerLink of 4 endpoints); returns its stats."""
    view = PartyView(link)
    port = RemotePort(link, view)  # its outputs carry the view's rounds and bytes so far
    sid = link.session_id
    prev, nxt = (pid - 1) % N_PARTIES, (pid + 1) % N_PARTIES
    rand = PairwiseRandomness.buffered(prf_key(link, prev, sid), prf_key(link, nxt, sid))
    party = Party(view, rand, store.frac_bits)
    req = port.recv_json()
    local_err = _check_request(req, store, pid)
    agreed = _agree(view, store, local_err is None)  # always: peers wait for this round
    err = local_err or agreed
    if err is not None:
        port.send_json({"ok": False, "error": err})
        return {"refused": True}
    port.send_json(
        {
            "ok": True,
            "model": store.model_id,
            "share_set": store.share_set_id,
            "party": pid,
            "frac_bits": store.frac_bits,
        }
    )
    ops = MpcOps(party, port)
    ops.weight_store = store  # type: ignore[attr-defined]
    cfg = store.build_config()
    marks = _Marks(view)
    stats: dict[str, Any] = {"party": pid}
    model = store.family.build(cfg, store.placeholders(), ops)
    stats["setup"] = marks.lap()
    if req["kind"] == "generate":
        sampler = Sampler(temperature=1.0 if req.get("sample") else 0.0)
        cache = model.new_cache()
        after_prefill: list[Any] = []  # the meter's totals once the prefill step is done

        def step(ids: list[int], pos: int, i: int) -> int:
            if pos >= cfg.max_context:
                raise MpcSessionError("the client asked for more tokens than the context holds.")
            ops.next_token(model.forward([0] * len(ids), cache, pos), sampler, i)
            if i:
                stats["tokens"].append(marks.lap())
            else:
                stats["prefill"], stats["tokens"] = marks.lap(), []
                after_prefill.append(party.meter.snapshot())
            return -1  # the token goes to the client only

        # Token ids are the client's (one-hot shares): the parties run placeholders, and go on
        # while the client sends continue.
        for _ in decode_loop(
            step,
            [0] * int(req["n_prompt"]),
            budget=None,
            stop_ids=(),
            stats=GenerationStats(),
            proceed=port.wait_continue,
        ):
            pass
    else:
        stats["texts"] = []
        for n in req["lengths"]:
            y = model.encode([0] * int(n))
            z = RShare(y.a + party.rand.zero_share(y.shape), y.b, pid, y.f)  # fresh client view
            ops.reveal(z)
            stats["texts"].append(marks.lap())
    stats["bytes_to_client"] = port.bytes_to_client
    stats["bytes_from_client"] = port.bytes_from_client
    stats["peak_rss_mb"] = round(peak_rss_mb(), 1)
    stats["by_op"] = _by_op(party.meter)
    if req["kind"] == "generate" and after_prefill:
        stats["by_op_decode"] = _by_op(party.meter.minus(after_prefill[0]))
    port.send_json(stats)
    return stats


def serve(
    cluster: ClusterConfig,
    pid: int,
    store: PartyStore,
    *,
    sessions: int | None,
    idle_timeout_s: float,
    timeout_s: float,
) -> int:
    served = 0
    while sessions is None or served < sessions:
        link = connect_parties(
            cluster, pid, timeout_s, connect_timeout_s=idle_timeout_s, heartbeat_s=1.0
        )
        try:
            st = run_session(link, store, pid)
        except InputCheckError as exc:  # every party reaches the same verdict in the same round
            RemotePort(link).abort(PeerError(CLIENT_ID, str(exc)))
            log(pid, "refused the client's input: not consistent one-hot shares")
            st = {"refused": True}
        except PeerError as exc:
            if exc.peer != CLIENT_ID:  # a party failed: tell the client, then stop serving
                RemotePort(link).abort(exc)
                raise
            log(pid, f"the client left the session ({exc.reason}); serving the next one")
            st = {"refused": True}
        finally:
            link.close()
        served += 1
        if st.get("refused"):
            log(pid, "refused a session request (see the client's error)")
        else:
            log(pid, f"session {served} done: {len(st.get('tokens', st.get('texts', [])))} steps")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="privinfer mpc party", description=__doc__)
    add_party_args(ap)
    return run_party(ap.parse_args(argv))


def add_party_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--id", type=int, required=True, help="party id: 0, 1 or 2")
    ap.add_argument("--cluster", required=True, help="cluster.toml (or its folder)")
    ap.add_argument(
        "--store", default=None, help="this party's share store (default: mpc-stores/party-<id>)"
    )
    ap.add_argument("--sessions", type=int, default=None, help="exit after this many sessions")
    ap.add_argument(
        "--idle-timeout",
        type=float,
        default=7 * 86400.0,
        help="seconds to wait for a session before exiting",
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="silence that means a dead peer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ready-file", default=None, help="touch this file once the store is loaded")


def run_party(args: argparse.Namespace) -> int:
    ready = Path(args.ready_file) if args.ready_file else None
    try:
        with sigterm_as_exit():
            return _run_party(args, ready)
    finally:
        if ready is not None:
            ready.unlink(missing_ok=True)


def _run_party(args: argparse.Namespace, ready: Path | None) -> int:
    pid = args.id
    torch.set_num_threads(max(1, args.threads))
    try:
        if pid not in range(N_PARTIES):
            raise PrivinferError("the party id must be 0, 1 or 2.")
        cluster = load_cluster(args.cluster)
        if cluster.n_parties != N_PARTIES + 1:
            raise PrivinferError(
                "the cluster must list 3 parties and the client (4 endpoints); "
                "create it with `privinfer mpc init-cluster`."
            )
        store = PartyStore(args.store or f"mpc-stores/party-{pid}", pid)
        store.check_cluster(cluster.cluster_id)
        log(pid, f"ready: model {store.model_id!r}, share set {store.share_set_id[:12]}")
        # the loaded modules and shares live as long as the party: keep the cyclic collector
        # from walking them again and again during sessions (~5% of a party's CPU per token)
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready.write_text(str(os.getpid()))
        return serve(
            cluster,
            pid,
            store,
            sessions=args.sessions,
            idle_timeout_s=args.idle_timeout,
            timeout_s=args.timeout,
        )
    except PeerError as exc:
        who = "the client" if exc.peer == CLIENT_ID else f"party {exc.peer}"
        log(pid, f"error: session aborted: {who}: {exc.reason}")
        return 1
    except PrivinferError as exc:
        log(pid, f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log(pid, "interrupted")
        return 130
    except SystemExit as exc:  # SIGTERM (see net.lifetime.sigterm_as_exit)
        log(pid, "terminated")
        return int(exc.code) if isinstance(exc.code, int) else 143
    except Exception as exc:  # noqa: BLE001 - no traceback: frames could hold shares
        if getattr(args, "debug", False) or os.environ.get("PRIVINFER_DEBUG"):
            raise
        log(pid, f"error: internal failure ({type(exc).__name__})")
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
