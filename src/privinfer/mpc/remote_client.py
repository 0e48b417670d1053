"""The MPC client: tokenised input in, one-hot (and, when sampling, temperature) shares out,
token shares back (semi-honest honest majority; the client trusts that no two parties collude,
and sees only the shares of what it asked to open: token ids, or the embedding).

It joins the cluster as endpoint 3 with its own certificate (mutual TLS), so every session has
fresh pairwise keys between all four endpoints. Decoding runs `models.generate.decode_loop`: the client
checks the token budget, tells the parties to continue or stop after each revealed token (a
public bit: the number of tokens is public anyway), and fills `GenerationStats`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from privinfer.models.generate import GenerationStats, check_budget, decode_loop
from privinfer.models.ops import Sampler
from privinfer.mpc.client import temperature_shares
from privinfer.mpc.protocols.gumbel import WORK_BITS
from privinfer.mpc.ring import bytes_to_ring, decode
from privinfer.mpc.runtime import N_PARTIES
from privinfer.mpc.session import (
    ABORT,
    CLIENT_ID,
    CONTINUE,
    COUNTERS,
    PROTOCOL,
    STOP,
    MpcSessionError,
)
from privinfer.mpc.shares import client_make_shares
from privinfer.net.cluster import ClusterConfig, load_cluster
from privinfer.net.peer import PeerError
from privinfer.net.tls import connect_parties

ProgressFn = Callable[[str], None]
PARTIES = range(N_PARTIES)


def _peer_message(exc: PeerError) -> str:
    if exc.peer == CLIENT_ID:  # the parties refused what this client sent
        return f"the MPC parties refused the session: {exc.reason}."
    return f"MPC session aborted: party {exc.peer}: {exc.reason}."


class MpcClient:
    """Client endpoint of one cluster; each `generate`/`embed` call is one session."""

    def __init__(
        self,
        cluster: str | ClusterConfig,
        *,
        connect_timeout_s: float = 20.0,
        timeout_s: float = 120.0,
        share_set: str | None = None,
    ) -> None:
        self.cluster = load_cluster(cluster) if isinstance(cluster, str) else cluster
        if self.cluster.n_parties != N_PARTIES + 1:
            raise MpcSessionError(
                "the cluster must list 3 parties and the client (4 endpoints); "
                "create it with `privinfer mpc init-cluster`."
            )
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.share_set = share_set
        self.received: list[tuple[int, int]] = []  # (party, bytes) of every payload received
        self.report: dict[str, Any] = {}
        self.frac_bits = 16
        # each party's cumulative rounds and party-to-party bytes sent, as of its last output
        self.live: dict[int, dict[str, int]] = {}

    # -- transport
    def _connect(self) -> Any:
        try:
            return connect_parties(
                self.cluster,
                CLIENT_ID,
                self.timeout_s,
                connect_timeout_s=self.connect_timeout_s,
                heartbeat_s=1.0,
            )
        except PeerError as exc:
            raise MpcSessionError(
                f"could not reach the MPC parties: party {exc.peer}: {exc.reason}."
            ) from None

    def _recv(self, link: Any, pid: int) -> bytes:
        got = link.recv(pid)
        self.received.append((pid, len(got)))
        if got.startswith(ABORT):
            try:
                info = json.loads(got[len(ABORT) :].decode("utf-8"))
                culprit, reason = int(info["peer"]), str(info["reason"])[:120]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                culprit, reason = pid, "aborted"
            raise PeerError(culprit, f"{reason} (reported by party {pid})")
        return got

    def _recv_output(self, link: Any, pid: int) -> bytes:
        """An output message less its counters trailer (kept in `live`)."""
        got = self._recv(link, pid)
        if len(got) < 1 + COUNTERS.size:
            raise PeerError(pid, "sent an output share of the wrong length")
        rounds, sent = COUNTERS.unpack(got[-COUNTERS.size :])
        self.live[pid] = {"rounds": rounds, "bytes_sent": sent}
        return got[: -COUNTERS.size]

    def _recv_json(self, link: Any, pid: int) -> dict[str, Any]:
        try:
            msg = json.loads(self._recv(link, pid).decode("utf-8"))
        except ValueError:
            raise PeerError(pid, "sent a malformed control message") from None
        if not isinstance(msg, dict):
            raise PeerError(pid, "sent a malformed control message")
        return msg

    def _send_all(self, link: Any, payloads: Sequence[bytes]) -> None:
        for pid in PARTIES:
            link.send(pid, payloads[pid], "client")

    def _open_session(self, link: Any, request: dict[str, Any]) -> None:
        request = {"protocol": PROTOCOL, "share_set": self.share_set, **request}
        self._send_all(link, [json.dumps(request).encode()] * N_PARTIES)
        replies = [self._recv_json(link, pid) for pid in PARTIES]
        errors = [r.get("error", "") for r in replies if not r.get("ok")]
        if errors:  # a party's own reason beats "another party refused"
            errors.sort(key=lambda e: e.startswith("another party"))
            raise MpcSessionError(str(errors[0])[:300])
        fbits = {r.get("frac_bits") for r in replies}
        if len(fbits) != 1 or not isinstance(replies[0].get("frac_bits"), int):
            raise MpcSessionError("the parties use different fixed-point encodings.")
        self.frac_bits = int(replies[0]["frac_bits"])
        self.report = {"share_set": replies[0].get("share_set"), "parties": {}}

    def _send_onehot(self, link: Any, ids: Sequence[int], vocab: int) -> None:
        onehot = torch.zeros(len(ids), vocab, dtype=torch.float64)
        onehot[torch.arange(len(ids)), torch.as_tensor(list(ids))] = 1.0
        self._send_all(link, client_make_shares(onehot, 0))

    def _recv_value(self, link: Any, shape: tuple[int, ...]) -> torch.Tensor:
        n = 8 * int(torch.Size(shape).numel())
        total, fbits = None, set()
        for pid in PARTIES:
            got = self._recv_output(link, pid)
            if len(got) != n + 1:
                raise PeerError(pid, "sent an output share of the wrong length")
            fbits.add(got[0])
            part = bytes_to_ring(got[1:], shape)
            total = part if total is None else total + part
        if len(fbits) != 1:
            raise MpcSessionError("the parties disagree on the output encoding.")
        return decode(total, fbits.pop())  # type: ignore[arg-type]

    def _collect_stats(self, link: Any) -> None:
        for pid in PARTIES:
            self.report["parties"][str(pid)] = self._recv_json(link, pid)

    # -- generation
    def generate(
        self,
        model_id: str,
        cfg: Any,
        prompt_ids: Sequence[int],
        *,
        sampler: Sampler,
        max_new_tokens: int,
        stop_ids: Sequence[int],
        stats: GenerationStats,
    ) -> Iterator[int]:
        """Yield token ids as the parties reveal them to this client."""
        budget = check_budget(len(prompt_ids), max_new_tokens, cfg.max_context)
        vocab = int(cfg.vocab_size)
        sampling = not sampler.greedy
        link = self._connect()
        healthy = False
        try:
            self._open_session(
                link,
                {
                    "kind": "generate",
                    "model": model_id,
                    "n_prompt": len(prompt_ids),
                    "sample": sampling,
                },
            )
            healthy = True

            def step(ids: list[int], _pos: int, i: int) -> int:
                if i:  # a decode step: tell the parties to go on
                    self._send_all(link, [CONTINUE] * N_PARTIES)
                self._send_onehot(link, ids, vocab)
                if sampling and i == 0:  # the parties draw the noise; T goes once
                    self._send_all(link, temperature_shares(sampler.temperature, WORK_BITS))
                tok = int(self._recv_value(link, (1,)).round().item())
                if not 0 <= tok < vocab:
                    raise MpcSessionError(
                        "a reconstructed token is out of range: a party is faulty."
                    )
                return tok

            yield from decode_loop(step, prompt_ids, budget=budget, stop_ids=stop_ids, stats=stats)
            self._send_all(link, [STOP] * N_PARTIES)
            self._collect_stats(link)
        except PeerError as exc:
            healthy = False
            raise MpcSessionError(_peer_message(exc)) from None
        except GeneratorExit:
            if healthy:  # the consumer stopped early: end the session politely
                try:
                    self._send_all(link, [STOP] * N_PARTIES)
                    self._collect_stats(link)
                except PeerError:
                    pass
            raise
        finally:
            link.close()

    # -- embeddings
    def embed(self, model_id: str, vocab: int, ids_list: Sequence[Sequence[int]]) -> torch.Tensor:
        """Embeddings [n, dim] of the tokenised texts; only the client learns them."""
        link = self._connect()
        try:
            self._open_session(
                link,
                {"kind": "embed", "model": model_id, "lengths": [len(i) for i in ids_list]},
            )
            rows = []
            for ids in ids_list:
                self._send_onehot(link, ids, vocab)
                rows.append(self._recv_embedding(link))
            self._collect_stats(link)
            return torch.cat(rows).float()
        except PeerError as exc:
            raise MpcSessionError(_peer_message(exc)) from None
        finally:
            link.close()

    def _recv_embedding(self, link: Any) -> torch.Tensor:
        got = [self._recv_output(link, pid) for pid in PARTIES]
        if len({len(g) for g in got}) != 1 or (len(got[0]) - 1) % 8:
            raise MpcSessionError("the parties sent embedding shares of different sizes.")
        dim = (len(got[0]) - 1) // 8
        total = sum(bytes_to_ring(g[1:], (1, dim)) for g in got)
        return decode(total, got[0][0])  # type: ignore[arg-type]
