"""The mpc+he mode: two-party private inference between the client and the model owner alone
(semi-honest 2PC; no third party, no dealer). The server (party 0, `privinfer mpc+he serve`)
holds the weights in plaintext and never sends them; the client (party 1, this process) holds
the prompt and is the only one to learn the output. Linear layers go through a `LinearBackend`
(OtLinear by correlated OTs in this build; HeLinear, HE on the client's share, swaps in), the
rest through twopc's OT-based protocols.

With `cluster=` the client joins a running server; without it, this process starts a local
server on loopback (a subprocess that dies with it) for the request. `stats.details["mpc+he"]`
gets both parties' rounds, bytes and seconds by op class (online and "/offline" apart).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from privinfer.errors import InputError
from privinfer.models.costs import OpCost
from privinfer.modes import Mode, Option, Request
from privinfer.security.matrix import META_LEAK, NA, Cell

if TYPE_CHECKING:
    import torch

    from privinfer.models.costs import EmbeddingStats
    from privinfer.models.generate import GenerationStats

OPTIONS = (
    Option(
        "cluster",
        str,
        None,
        "two-party cluster folder of a running `privinfer mpc+he serve` "
        "(default: start a local server)",
    ),
    Option(
        "connect_timeout_s", float, 20.0, "seconds to wait for the server to accept", positive=True
    ),
    Option(
        "timeout_s",
        float,
        120.0,
        "seconds to wait for any one message of the server",
        positive=True,
    ),
)
SEMI = "semi-honest: both parties follow the protocol"


def _fill(stats: GenerationStats | EmbeddingStats, report: dict[str, Any]) -> None:
    from privinfer.twopc.linear import DEFAULT_BACKEND

    stats.details["mpc+he"] = {"linear": DEFAULT_BACKEND, **report}
    for op, c in (report.get("client") or {}).items():
        stats.costs.by_op[op].add(
            OpCost(
                int(c["calls"]),
                wall_s=c["wall_s"],
                rounds=int(c["rounds"]),
                bytes_sent=int(c["bytes_sent"]),
                bytes_received=int(c["bytes_received"]),
            )
        )


@contextlib.contextmanager
def _party(model: Any, cluster: str | None, connect_timeout_s: float, timeout_s: float):
    from privinfer.twopc.service import CLIENT, connect, local_server

    with contextlib.ExitStack() as stack:
        if cluster is None:
            cluster = str(stack.enter_context(local_server(model.name, sessions=1)))
        party = connect(cluster, CLIENT, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        stack.callback(party.link.close)
        yield party


class MpcHeMode(Mode):
    name = "mpc+he"
    summary = (
        "two parties, client and model owner: OT-based secret sharing (and HE for the linear "
        "layers) with no third party (semi-honest)"
    )
    tasks = frozenset({"generate", "embed"})
    options = OPTIONS
    leakage = (
        "prompt length (number of input rows) and text lengths",
        "number of generated tokens (the client sends one continue/stop byte per token)",
        "whether sampling is on (not the temperature, which the client shares)",
        "model name and shape (the server's manifest: weight names and shapes)",
        "per-token timing; the server's per-op counts (rounds, bytes, seconds) reach the client",
        "nothing else: every other message is masked by OT pads, Beaver masks or uniform shares; "
        "the chosen token and embeddings are opened to the client only",
    )
    threat = {
        "network observer": {
            "prompt": Cell("yes", "mutually authenticated TLS 1.3 between client and server"),
            "weights": Cell("yes", "TLS; and the weights never leave the server"),
            "output": Cell("yes", "TLS; opened to the client only"),
            "metadata": Cell("no", META_LEAK + "; message sizes follow the model shape"),
        },
        "host operator": {
            "prompt": Cell(
                "yes",
                "the server's host sees its party's shares and masked messages only",
                SEMI,
            ),
            "weights": Cell("n/a", "the server operator is the model owner"),
            "output": Cell("yes", "shares of the token are opened to the client only", SEMI),
            "metadata": Cell("no", META_LEAK),
        },
        "one compute party": {a: NA for a in ("prompt", "weights", "output", "metadata")},
        "two colluding parties": {a: NA for a in ("prompt", "weights", "output", "metadata")},
        "the client": {
            "prompt": Cell("n/a", "the client owns the prompt"),
            "weights": Cell(
                "partly",
                "the weights stay on the server; the client sees uniform shares, OT messages "
                "masked under keys it lacks and the chosen token ids (greedy argmax, or one "
                "Gumbel-max draw on noise the server draws), as in every mode: many queries "
                "reveal the model's behaviour",
                SEMI + " (a malicious client is not covered: it could deviate and learn more)",
            ),
            "output": Cell("n/a", "the client owns the output"),
            "metadata": Cell("n/a", "the client owns its metadata"),
        },
        "the server": {
            "prompt": Cell(
                "yes",
                "2-out-of-2 sharing over Z_2^64: the server holds one uniform share; every "
                "message it receives is masked (OT, Beaver, one-time pads)",
                SEMI + " (a malicious server is not covered)",
            ),
            "weights": Cell("n/a", "the server owns the weights"),
            "output": Cell(
                "yes",
                "the argmax index is opened to the client only; the server knows its own "
                "sampling noise but neither the logits nor the temperature nor the draw",
                SEMI + " (a malicious server could bias the sampling noise)",
            ),
            "metadata": Cell("no", "prompt length, number of tokens, sampling on/off, timing"),
        },
    }
    bench_workloads = ("generate",)

    def security(self, model: Any | None, **params: Any) -> dict[str, Any]:
        from privinfer.twopc.protocol_security import parameters

        return parameters(frac_bits=params.get("frac_bits"))

    def info(self, model: Any | None, **options: Any) -> dict[str, Any]:
        return {"summary": self.summary, "parties": "client and model owner (2PC)"}

    @contextlib.contextmanager
    def services(self, model: Any, **options: Any) -> Iterator[dict[str, Any]]:
        """With no `cluster`: one local server for every request, stopped on exit."""
        if options.get("cluster"):
            yield options
            return
        from privinfer.twopc.service import local_server

        with local_server(model.name, sessions=0) as folder:
            yield {**options, "cluster": str(folder)}

    def generate(
        self,
        model: Any,
        req: Request,
        stats: GenerationStats,
        *,
        cluster: str | None = None,
        connect_timeout_s: float = 20.0,
        timeout_s: float = 120.0,
    ) -> Iterator[int]:
        """Tokens revealed to this client only: greedy, or Gumbel-max sampling on the server's
        noise with the client's temperature kept secret."""
        if req.sampler.top_p < 1.0:
            raise InputError(
                "--top-p below 1 is not supported in mode mpc+he: nucleus sampling would need a "
                "private sort of the whole vocabulary; use --temperature with --top-p 1"
            )
        if req.sampler.seed is not None and not req.sampler.greedy:
            raise InputError(
                "--seed is not supported with sampling in mode mpc+he: the server draws the "
                "sampling noise, which the client must not control; leave --seed out"
            )
        from privinfer.models.generate import check_budget, timed_stream
        from privinfer.twopc.session import client_generate

        budget = check_budget(len(req.prompt_ids), req.max_new_tokens, model.cfg.max_context)
        with _party(model, cluster, connect_timeout_s, timeout_s) as party:
            report: dict[str, Any] = {}
            ids = client_generate(
                party,
                model,
                req.prompt_ids,
                budget,
                model.tokenizer.eos_ids,
                report,
                sampler=req.sampler,
            )
            yield from timed_stream(ids, stats, prompt_tokens=len(req.prompt_ids))
            stats.stop_reason = "length" if stats.new_tokens == budget else "eos"
            _fill(stats, report)

    def embed(
        self,
        model: Any,
        ids_list: list[list[int]],
        stats: EmbeddingStats,
        *,
        cluster: str | None = None,
        connect_timeout_s: float = 20.0,
        timeout_s: float = 120.0,
    ) -> torch.Tensor:
        """Sentence embeddings [n, dim], revealed to this client only."""
        import torch

        from privinfer.twopc.session import client_embed

        with _party(model, cluster, connect_timeout_s, timeout_s) as party:
            report: dict[str, Any] = {}
            vecs = client_embed(party, model, ids_list, report)
            _fill(stats, report)
            return torch.cat([v.float() for v in vecs])


MODE = MpcHeMode()
