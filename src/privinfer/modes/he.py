"""The he mode (CKKS): embeddings and generation with a client-held secret key.

Security assumption: semi-honest server with plaintext weights, client with the secret key (see
docs/he.md for the threat model and exactly what leaks). Without `server=` the server runs as a
separate local process (`privinfer he serve`) over mutually authenticated TLS; `in_process=True`
simulates both sides in this process (tests, benchmarks) with separate key contexts. Refresh
rounds and bytes each way reach the caller in `stats.details["he"]` and `stats.costs`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from privinfer.errors import InputError
from privinfer.modes import Mode, Option, Request
from privinfer.security.matrix import ASSETS, META_LEAK, NA, Cell

if TYPE_CHECKING:
    import torch

    from privinfer.models.costs import CostReport, EmbeddingStats
    from privinfer.models.generate import GenerationStats

OPTIONS = (
    Option("server", str, None, "address of a running HE server (default: start a local one)"),
    Option(
        "in_process",
        bool,
        False,
        "run client and server in this process with separate key contexts (tests)",
        cli=False,
    ),
    Option(
        "context_tokens",
        int,
        None,
        "slots reserved for prompt + new tokens (default: the next power of two)",
        frozenset({"generate"}),
        cli=False,
        positive=True,
    ),
)


_LOCAL_CERTS: list[Any] = []  # identity folders of the local servers `services` runs


def _progress(msg: str) -> None:
    print(f"he: {msg}", file=sys.stderr, flush=True)


def _record(costs: CostReport, details: dict[str, Any], figures: dict[str, Any]) -> None:
    details["he"] = figures
    costs.record(
        "refresh",
        rounds=int(figures.get("rounds", 0)),
        refreshes=int(figures.get("rounds", 0)),
        bytes_sent=int(figures.get("bytes_to_server", 0)),
        bytes_received=int(figures.get("bytes_to_client", 0)),
    )


def _context_tokens(n: int) -> int:
    return max(2, 1 << (n - 1).bit_length())


class HeMode(Mode):
    name = "he"
    summary = "CKKS on a server that holds the weights; the client holds the key and refreshes"
    tasks = frozenset({"generate", "embed"})
    options = OPTIONS
    leakage = (
        "prompt length (number of ciphertext slots used)",
        "model shape",
        "number of refresh round trips",
        "per-layer timing",
        "the final output to the client (by design)",
    )
    threat = {
        "network observer": {
            "prompt": Cell(
                "yes", "CKKS ciphertexts (RLWE, >= 128-bit parameters) on an authenticated channel"
            ),
            "weights": Cell("yes", "weights never leave the server"),
            "output": Cell("yes", "encrypted under the client's key"),
            "metadata": Cell("no", META_LEAK),
        },
        "host operator": {
            "prompt": Cell(
                "yes",
                "the server computes on ciphertexts only",
                "RLWE hardness; semi-honest server",
            ),
            "weights": Cell("n/a", "the server operator owns the weights"),
            "output": Cell("yes", "encrypted under the client's key", "RLWE hardness"),
            "metadata": Cell(
                "no", "sequence length, model shape, number of refresh rounds, timing"
            ),
        },
        "one compute party": {a: NA for a in ASSETS},
        "two colluding parties": {a: NA for a in ASSETS},
        "the client": {
            "prompt": Cell("n/a", "the client owns the prompt"),
            "weights": Cell(
                "partly",
                "refresh values are masked by the server (statistical masking + noise "
                "flooding); the output itself and, where the embedding runs client-side, "
                "the embedding table are revealed; delivered outputs are re-randomised (fresh "
                "c1, slots outside the output zeroed) but their CKKS noise is only blurred: "
                "the flood the outputs' precision allows gives 0 bits of statistical "
                "circuit privacy (figures: privinfer security --mode he)",
            ),
            "output": Cell("n/a", "the client owns the output"),
            "metadata": Cell("n/a", "the client owns its metadata"),
        },
        "the server": {
            "prompt": Cell("yes", "see host operator", "RLWE hardness"),
            "weights": Cell("n/a", "the server owns the weights"),
            "output": Cell("yes", "see host operator", "RLWE hardness"),
            "metadata": Cell("no", "sequence length, model shape, timing"),
        },
    }
    bench_workloads = ("generate", "he-ops", "he-fidelity", "he-smollm2")

    def security(self, model: Any | None, **params: Any) -> dict[str, Any]:
        from privinfer.security.report import he_parameters

        return he_parameters()

    def info(self, model: Any | None, **options: Any) -> dict[str, Any]:
        """The CKKS parameters in use and their security level."""
        p = self.security(model)
        keep = ("scheme", "poly_modulus_degree", "coeff_modulus_bits", "scale_bits")
        return {
            "summary": self.summary,
            **{k: p[k] for k in keep if k in p},
            "security_level_bits": p.get("security_level_bits"),
        }

    @contextlib.contextmanager
    def services(self, model: Any, **options: Any) -> Iterator[dict[str, Any]]:
        """With no `server`: one local HE server (fresh TLS identities) for every request,
        stopped on exit; the client side finds its identity through $PRIVINFER_HE_CERTS, as for
        any `server=`."""
        if options.get("server") or options.get("in_process"):
            yield options
            return
        import os
        import signal
        import subprocess
        import tempfile
        from pathlib import Path

        from privinfer.he.transport import ensure_identities
        from privinfer.net.cluster import free_ports
        from privinfer.net.lifetime import spawn

        with tempfile.TemporaryDirectory(prefix="privinfer-he-") as tmp:
            (port,) = free_ports(1)
            # one identity folder for every local server of this process (the chat and the
            # embedding model's): the client finds it through one environment variable
            certs = _LOCAL_CERTS[-1] if _LOCAL_CERTS else Path(tmp) / "certs"
            ready = Path(tmp) / "ready"
            ensure_identities(certs, port)
            cmd = [sys.executable, "-m", "privinfer.cli", "he", "serve", "--model"]
            cmd += [str(model.source), "--port", str(port), "--certs", str(certs)]
            proc = spawn([*cmd, "--ready-file", str(ready)], stdin=subprocess.DEVNULL)
            old = os.environ.get("PRIVINFER_HE_CERTS")
            try:
                deadline = time.monotonic() + 300
                while not ready.exists():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise InputError("The local HE server did not start.")
                    time.sleep(0.2)
                os.environ["PRIVINFER_HE_CERTS"] = str(certs)
                _LOCAL_CERTS.append(certs)
                yield {**options, "server": f"127.0.0.1:{port}"}
            finally:
                if _LOCAL_CERTS and _LOCAL_CERTS[-1] == certs:
                    _LOCAL_CERTS.pop()
                if old is None:
                    os.environ.pop("PRIVINFER_HE_CERTS", None)
                else:
                    os.environ["PRIVINFER_HE_CERTS"] = old
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def embed(
        self,
        model: Any,
        ids_list: list[list[int]],
        stats: EmbeddingStats,
        *,
        server: str | None = None,
        in_process: bool = False,
    ) -> torch.Tensor:
        """Embeddings [n, dim] computed under CKKS; prints a fidelity/cost line on stderr."""
        import torch

        from privinfer.he.ops import HeOps
        from privinfer.he.server import model_ranges

        t0 = time.perf_counter()
        if in_process:
            outs, rounds, sent, received = [], 0, 0, 0
            for ids in ids_list:
                ops = HeOps(ranges=model_ranges(model), progress=_progress)
                outs.append(ops.reveal(model.build(ops).encode(ids)))
                s = ops.refresher.stats
                rounds += s.rounds
                sent += s.bytes_to_server + ops.key_bytes
                received += s.bytes_to_client
            vecs = torch.cat(outs)
            figures: dict[str, Any] = {
                "rounds": rounds,
                "bytes_to_server": sent,
                "bytes_to_client": received,
            }
        else:
            from privinfer.he.client import embed_remote

            vecs, figures = embed_remote(model, ids_list, server)
        plain = torch.cat([model.plain().ops.reveal(model.plain().encode(i)) for i in ids_list])
        cos = torch.nn.functional.cosine_similarity(vecs, plain).tolist()
        figures = {**figures, "he_s": round(time.perf_counter() - t0, 3), "cosine_to_plain": cos}
        _record(stats.costs, stats.details, figures)
        print(
            f"he: cosine to plaintext {', '.join(f'{c:.7f}' for c in cos)}; "
            f"{figures['he_s']:.1f} s; {figures['rounds']} refresh rounds; "
            f"{figures['bytes_to_server'] / 1e6:.1f} MB to server, "
            f"{figures['bytes_to_client'] / 1e6:.1f} MB to client",
            file=sys.stderr,
        )
        return vecs

    def generate(
        self,
        model: Any,
        req: Request,
        stats: GenerationStats,
        *,
        server: str | None = None,
        in_process: bool = False,
        context_tokens: int | None = None,
    ) -> Iterator[int]:
        """Generate under CKKS: the client picks every token from logits only it can decrypt."""
        from privinfer.he.ckks import PARAMS_16384
        from privinfer.he.session import HeClient
        from privinfer.models.generate import check_budget, threaded_tokens, timed_stream

        prompt_ids = req.prompt_ids
        budget = check_budget(len(prompt_ids), req.max_new_tokens, model.cfg.max_context)
        ctx_t = context_tokens or _context_tokens(len(prompt_ids) + budget)
        if ctx_t > 64:
            raise InputError("mode he supports prompt + new tokens <= 64 in this version")
        client = HeClient.create(
            PARAMS_16384,
            sampler=req.sampler,
            stop_ids=tuple(model.tokenizer.eos_ids),
            max_new_tokens=budget,
        )
        def produce(emit: Callable[[int], None]) -> None:
            if in_process:
                _local_generation(model, client, prompt_ids, budget, ctx_t, emit)
            else:
                live = stats.details.setdefault("client_link", {})
                figures = _remote_generation(
                    model, client, prompt_ids, budget, ctx_t, server, emit, live
                )
                _record(stats.costs, stats.details, figures)

        tokens = threaded_tokens(produce)
        yield from timed_stream(tokens, stats, prompt_tokens=len(prompt_ids))
        stats.stop_reason = "length" if len(client.chosen) >= budget else "eos"


def _local_generation(model, client, prompt_ids, budget, ctx_t, emit) -> None:
    from privinfer.he.ops import HeOps
    from privinfer.he.server import generation_session, model_ranges
    from privinfer.he.session import LocalKeyHolder

    ops = HeOps(
        keyholder=LocalKeyHolder(client),
        ranges=model_ranges(model),
        context_tokens=ctx_t,
        progress=_progress,
    )
    emitted = 0
    for _ in generation_session(model, ops, list(prompt_ids), budget):
        for tok in client.chosen[emitted:]:
            emit(tok)
        emitted = len(client.chosen)
    for tok in client.chosen[emitted:]:  # the last pick ends the session
        emit(tok)


def _remote_generation(
    model, client, prompt_ids, budget, ctx_t, server, emit, live
) -> dict[str, Any]:
    """`live` gets this client's bytes each way before each token is handed on."""
    from privinfer.he.client import _server_for, run_client_session
    from privinfer.he.session import client_rows
    from privinfer.he.transport import connect

    with _server_for(model, server, 1) as (cluster, host, port):
        conn = connect(cluster, host, port)
        try:
            task = {
                "task": "generate",
                "prompt_len": len(prompt_ids),
                "max_new_tokens": budget,
                "context_tokens": ctx_t,
            }
            done = run_client_session(
                conn,
                client,
                task,
                client_rows(model, prompt_ids),
                next_rows=lambda tok: client_rows(model, [tok]),
                on_token=lambda tok: (
                    live.update(bytes_sent=conn.bytes_sent, bytes_received=conn.bytes_received),
                    emit(tok),
                ),
            )
        finally:
            conn.close()
    return {
        "rounds": int(done.get("rounds", 0)),
        "bytes_to_server": conn.bytes_sent,
        "bytes_to_client": conn.bytes_received,
    }


MODE = HeMode()
