"""The mpc mode: generation and embeddings by three compute parties on secret shares
(semi-honest, honest majority: no single party learns the prompt, the weights or the output).

With `cluster=` the client joins parties already running (`privinfer mpc party`); without it,
this process shares the model into three throwaway stores, starts three local party processes
on loopback, and acts as the client (see `privinfer.mpc.launcher`). Progress goes to stderr;
per-party rounds, bytes and peak RSS reach the caller in `stats.details["mpc"]`, and party 0's
rounds and bytes by op class in `stats.costs`. While it runs, `stats.details["engine_live"]` holds
party 0's cumulative rounds and party-to-party bytes sent as of the last token (each party sends
them with its output share).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from privinfer.errors import InputError
from privinfer.models.costs import OpCost
from privinfer.modes import Mode, Option, Request
from privinfer.security.matrix import ASSETS, META_LEAK, Cell

if TYPE_CHECKING:
    import torch

    from privinfer.models.costs import EmbeddingStats
    from privinfer.models.generate import GenerationStats

OPTIONS = (
    Option(
        "cluster",
        str,
        None,
        "cluster file of running MPC parties (default: start three local ones)",
    ),
    Option(
        "connect_timeout_s", float, 20.0, "seconds to wait for the parties to accept", positive=True
    ),
    Option(
        "timeout_s",
        float,
        120.0,
        "seconds to wait for any one reply from the parties",
        positive=True,
    ),
    Option("progress", str, "stderr", "progress lines: 'stderr', a callable, or None", cli=False),
)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per-party prefill/decode rounds and bytes, and peak RSS, from the parties' STATS."""
    out: dict[str, Any] = {"share_set": report.get("share_set"), "parties": {}}
    for pid, st in report.get("parties", {}).items():
        toks = st.get("tokens", [])
        row: dict[str, Any] = {
            "setup": st.get("setup"),
            "prefill": st.get("prefill"),
            "peak_rss_mb": st.get("peak_rss_mb"),
            "bytes_to_client": st.get("bytes_to_client"),
            "bytes_from_client": st.get("bytes_from_client"),
        }
        if toks:
            row["decode_per_token"] = toks
            row["decode_rounds_per_token_mean"] = sum(t["rounds"] for t in toks) / len(toks)
            row["decode_bytes_sent_per_token_mean"] = sum(t["bytes_sent"] for t in toks) / len(toks)
        if "texts" in st:
            row["texts"] = st["texts"]
        row["by_op"] = st.get("by_op")
        if st.get("by_op_decode"):  # the decode steps alone (after the prefill)
            row["by_op_decode"] = st["by_op_decode"]
        out["parties"][pid] = row
    return out


def _fill(stats: GenerationStats | EmbeddingStats, report: dict[str, Any]) -> None:
    """Per-party figures into `stats.details["mpc"]`; party 0's by-op rounds and bytes into
    `stats.costs` (the parties are symmetric, and their STATS are keyed "0", "1", "2")."""
    summary = _summary(report)
    stats.details["mpc"] = summary
    for op, c in (summary["parties"].get("0", {}).get("by_op") or {}).items():
        stats.costs.by_op[op].add(
            OpCost(
                c["calls"],
                wall_s=c.get("wall_s", 0.0),
                rounds=c["rounds"],
                bytes_sent=c["bytes_sent"],
            )
        )


@contextlib.contextmanager
def _client(
    model: Any, cluster: str | None, connect_timeout_s: float, timeout_s: float, progress: Any
) -> Iterator[Any]:
    from privinfer.mpc.launcher import LocalCluster, stderr_progress
    from privinfer.mpc.remote_client import MpcClient

    prog = stderr_progress if progress == "stderr" else progress
    with contextlib.ExitStack() as stack:
        share_set = None
        if cluster is None:
            local = stack.enter_context(LocalCluster(model, model.name, progress=prog))
            cluster, share_set = str(local.cluster_path), local.share_set
        client = MpcClient(
            cluster, share_set=share_set, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s
        )
        if prog:
            prog("parties ready; running under MPC")
        yield client


class MpcMode(Mode):
    name = "mpc"
    summary = "three compute parties on replicated secret shares (honest majority, semi-honest)"
    tasks = frozenset({"generate", "embed"})
    options = OPTIONS
    leakage = (
        "prompt length (number of input rows)",
        "number of generated tokens",
        "model shape (layers, hidden size, vocab) from message sizes",
        "per-token timing",
        "whether sampling is on (not the temperature)",
        "nothing else: every revealed value goes to the client only; a sampled token is one "
        "Gumbel-max draw on noise the parties generate (the client sends only its temperature, "
        "clamped to [0, 16384])",
    )
    threat = {
        "network observer": {
            "prompt": Cell("yes", "mutually authenticated TLS 1.3 between parties and client"),
            "weights": Cell("yes", "TLS; and weights exist only as replicated shares"),
            "output": Cell("yes", "only shares of the next token, sent to the client"),
            "metadata": Cell("no", META_LEAK + "; message sizes follow the model shape"),
        },
        "host operator": {
            "prompt": Cell(
                "yes",
                "each host runs one party and holds two of three shares",
                "operators of different parties do not collude (honest majority)",
            ),
            "weights": Cell("yes", "replicated shares from the model owner", "honest majority"),
            "output": Cell("yes", "revealed to the client only", "honest majority"),
            "metadata": Cell("no", META_LEAK),
        },
        "one compute party": {
            "prompt": Cell(
                "yes",
                "its two shares are uniformly random; its view is simulatable",
                "semi-honest: it follows the protocol",
            ),
            "weights": Cell("yes", "replicated sharing over Z_2^64", "semi-honest"),
            "output": Cell(
                "yes",
                "the argmax / Gumbel-max result is revealed to the client only",
                "semi-honest",
            ),
            "metadata": Cell("no", "sequence length, number of tokens, model shape, timing"),
        },
        "two colluding parties": {
            "prompt": Cell("no", "two parties hold all three shares and can reconstruct"),
            "weights": Cell("no", "reconstructible by two parties"),
            "output": Cell("no", "reconstructible by two parties"),
            "metadata": Cell("no", META_LEAK),
        },
        "the client": {
            "prompt": Cell("n/a", "the client owns the prompt"),
            "weights": Cell(
                "partly",
                "per step it sees one token id: the argmax (greedy), or one draw of "
                "softmax(logits/T) for a T of its choice in [0, 16384], on Gumbel noise the "
                "parties generate from their own PRFs (the client sends no noise and cannot bias "
                "it); within statistical distance 4.3e-05 per token at T = 1 (`privinfer security "
                "--mode mpc`). Never logits; many draws estimate the probabilities, as in every "
                "mode. A client that shares a row other than one-hot (weight 2, a fraction, a mix "
                "of rows) or hands two parties different copies of a share is refused before "
                "its input is used: the parties check each input's rows are bits summing to 1 "
                "(40 random-bit combinations of x(x-1): soundness error 2^-40; 1 round per "
                "input) and compare keyed tags of every share component",
                "the parties' PRF keys stay secret (AES-128); the client colludes with no party",
            ),
            "output": Cell("n/a", "the client owns the output"),
            "metadata": Cell("n/a", "the client owns its metadata"),
        },
        "the server": {
            a: Cell("n/a", "the servers are the compute parties: see those rows") for a in ASSETS
        },
    }
    security_needs_model = True
    bench_workloads = ("generate", "mpc-ops", "mpc-gpt2-shape", "mpc-fidelity")

    def security(self, model: Any | None, **params: Any) -> dict[str, Any]:
        from privinfer.mpc.protocols.gumbel import sampling_security
        from privinfer.security.report import mpc_parameters

        out = mpc_parameters(
            model,
            params.get("model_name", getattr(model, "name", "")),
            params.get("prompt", "What is the capital of France?"),
            params.get("frac_bits"),
        )
        out["sampling"] = sampling_security(int(model.cfg.vocab_size))
        return out

    def info(self, model: Any | None, **options: Any) -> dict[str, Any]:
        """The parties of `cluster` and the SHA-256 fingerprints of their TLS certificates."""
        out: dict[str, Any] = {"summary": self.summary, "threshold": "2 of 3 reconstruct"}
        if options.get("cluster"):
            import hashlib

            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding

            from privinfer.mpc.session import CLIENT_ID
            from privinfer.net.cluster import load_cluster

            def fingerprint(pem: bytes) -> str:
                cert = x509.load_pem_x509_certificate(pem)
                return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()

            cfg = load_cluster(options["cluster"])
            out["parties"] = [
                {
                    "id": p.party_id,
                    "address": f"{p.host}:{p.port}",
                    "cert_sha256": fingerprint(p.cert.read_bytes()),
                }
                for p in cfg.parties
                if p.party_id != CLIENT_ID  # the client's own identity is not a party
            ]
        return out

    @contextlib.contextmanager
    def services(self, model: Any, **options: Any) -> Iterator[dict[str, Any]]:
        """With no `cluster`: three local parties for every request (shared once), stopped on exit."""
        if options.get("cluster"):
            yield options
            return
        from privinfer.mpc.launcher import LocalCluster, stderr_progress

        prog = stderr_progress if options.get("progress") == "stderr" else options.get("progress")
        # the parties serve sessions one after another for as long as this process lives
        local = LocalCluster(
            model, model.name, sessions=2**31, progress=prog, ready_timeout_s=10**7
        )
        with local:
            yield {**options, "cluster": str(local.cluster_path)}

    def generate(
        self,
        model: Any,
        req: Request,
        stats: GenerationStats,
        *,
        cluster: str | None = None,
        connect_timeout_s: float = 20.0,
        timeout_s: float = 120.0,
        progress: Any = "stderr",
    ) -> Iterator[int]:
        """Tokens revealed to this client only; greedy or Gumbel-max sampling inside MPC."""
        if req.sampler.top_p < 1.0:
            raise InputError(
                "--top-p below 1 is not supported in mode mpc: nucleus sampling would need a "
                "private sort of the whole vocabulary; use --temperature with --top-p 1"
            )
        if req.sampler.seed is not None and not req.sampler.greedy:
            raise InputError(
                "--seed is not supported with sampling in mode mpc: the parties draw the "
                "sampling noise from fresh per-session randomness that the client must not "
                "control (noise a client chooses reveals logit differences); leave --seed out"
            )
        from privinfer.models.generate import check_budget

        check_budget(len(req.prompt_ids), req.max_new_tokens, model.cfg.max_context)
        with _client(model, cluster, connect_timeout_s, timeout_s, progress) as client:
            live = stats.details.setdefault("client_link", {})
            for tok in client.generate(
                model.name,
                model.cfg,
                req.prompt_ids,
                sampler=req.sampler,
                max_new_tokens=req.max_new_tokens,
                stop_ids=model.tokenizer.eos_ids,
                stats=stats,
            ):
                live["bytes_received"] = sum(n for _, n in client.received)  # as it accrues
                if 0 in client.live:  # party 0's rounds and bytes so far (public counts)
                    stats.details["engine_live"] = dict(client.live[0])
                yield tok
            _fill(stats, client.report)

    def embed(
        self,
        model: Any,
        ids_list: list[list[int]],
        stats: EmbeddingStats,
        *,
        cluster: str | None = None,
        connect_timeout_s: float = 20.0,
        timeout_s: float = 120.0,
        progress: Any = "stderr",
    ) -> torch.Tensor:
        """Sentence embeddings [n, dim], revealed to this client only."""
        with _client(model, cluster, connect_timeout_s, timeout_s, progress) as client:
            vecs = client.embed(model.name, int(model.cfg.vocab_size), ids_list)
            _fill(stats, client.report)
            return vecs


MODE = MpcMode()
