"""The tee+he mode: CKKS on the HE server, the secret key in an attested refresh enclave.

Security assumption: semi-honest HE server (plaintext weights, public keys, masked values), a
refresh enclave verified by the client (pinned root + the expected measurement) that holds the
client's secret key for one session, and no collusion between the two: a server and an enclave
that collude learn the prompt and the output (docs/tee-he.md). The client is away between
submit and result for embeddings and answers once per token for generation. Without `server=`
a local `privinfer tee+he serve` (server + refresh enclave) runs as a subprocess for the call
(`services()` keeps one for a proxy's lifetime).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privinfer.errors import InputError
from privinfer.modes import Mode, Option, Request
from privinfer.modes.he import MODE as HE
from privinfer.modes.he import _context_tokens, _record
from privinfer.security.matrix import META_LEAK, Cell

if TYPE_CHECKING:
    import torch

    from privinfer.models.costs import EmbeddingStats
    from privinfer.models.generate import GenerationStats

OPTIONS = (
    Option("server", str, None, "address of a running tee+he server (default: start one here)"),
    Option(
        "teehe_dir",
        str,
        None,
        "folder of `privinfer tee+he serve --dir` holding the client's TLS identity (certs/) "
        "and the enclave platform root (root_cert.pem); default $PRIVINFER_TEEHE_DIR",
    ),
    Option(
        "root_cert",
        str,
        None,
        "PEM file of the pinned platform root (default: the exported one)",
        cli_flag="--root",
    ),
)

ENCLAVE = "the refresh enclave alone"
MASKED = (
    "sees only server-masked values (uniform mask, statistical distance <= 2^-41 from a "
    "data-independent view) and public rotation steps; never the input or output ciphertexts"
)


def _threat() -> dict[str, dict[str, Cell]]:
    rlwe = "RLWE hardness; semi-honest server"
    return {
        "network observer": {
            "prompt": Cell("yes", "CKKS ciphertexts over mutual TLS; the key in an AES-GCM record"),
            "weights": Cell("yes", "weights never leave the server"),
            "output": Cell("yes", "encrypted under the client's key"),
            "metadata": Cell("no", META_LEAK),
        },
        "host operator": {
            "prompt": Cell(
                "yes",
                "the server computes on ciphertexts; the key lives only in the enclave's memory",
                "the operator is not root on the enclave's host (software platform) or the "
                "hardware TEE holds",
            ),
            "weights": Cell("n/a", "the server operator owns the weights"),
            "output": Cell("yes", "encrypted under the client's key", rlwe),
            "metadata": Cell("no", "sequence length, model shape, refresh count, timing"),
        },
        "one compute party": {
            "prompt": Cell("yes", f"the HE server: ciphertexts only; {ENCLAVE}: {MASKED}", rlwe),
            "weights": Cell(
                "partly",
                "the enclave sees masked intermediate values only; the server owns the weights",
            ),  # fmt: skip
            "output": Cell("yes", f"the server: ciphertexts; {ENCLAVE}: {MASKED}", rlwe),
            "metadata": Cell("no", "sequence length, model shape, refresh count, timing"),
        },
        "two colluding parties": {
            "prompt": Cell(
                "no",
                "server + enclave together hold the ciphertexts and the secret key: "
                "they decrypt the input and everything computed from it",
            ),  # fmt: skip
            "weights": Cell("n/a", "the server owns the weights"),
            "output": Cell("no", "server + enclave together decrypt the output"),
            "metadata": Cell("no", "everything the server sees"),
        },
        "the client": {
            "prompt": Cell("n/a", "the client owns the prompt"),
            "weights": HE.threat["the client"]["weights"],
            "output": Cell("n/a", "the client owns the output"),
            "metadata": Cell("n/a", "the client owns its metadata"),
        },
        "the server": {
            "prompt": Cell("yes", "ciphertexts only; the key goes to the attested enclave", rlwe),
            "weights": Cell("n/a", "the server owns the weights"),
            "output": Cell("yes", "stored and sent encrypted under the client's key", rlwe),
            "metadata": Cell(
                "no", "sequence length, model shape, refresh count, timing, when the client fetches"
            ),  # fmt: skip
        },
    }


def _endpoint(server: str, teehe_dir: str | None, root_cert: str | None) -> Any:
    from privinfer.net.cluster import load_cluster, parse_hostport
    from privinfer.teehe.client import endpoint_from

    folder = teehe_dir or os.environ.get("PRIVINFER_TEEHE_DIR")
    if not folder:
        raise InputError("--server needs --teehe-dir (or $PRIVINFER_TEEHE_DIR): certs and root.")
    host, port = parse_hostport(server.removeprefix("tls://"))
    root = root_cert or str(Path(folder) / "root_cert.pem")
    if not Path(root).is_file():
        raise InputError(f"no pinned root certificate at {root}")
    return endpoint_from(load_cluster(Path(folder) / "certs"), host, port, root)


@contextlib.contextmanager
def local_server(model: Any) -> Iterator[tuple[str, str]]:
    """`privinfer tee+he serve` for `model` in a subprocess (fresh folder); yields (address,
    folder). As root the enclave runs as its own user; otherwise as you (stated on stderr)."""
    import signal
    import subprocess
    import tempfile

    from privinfer.net.cluster import free_ports
    from privinfer.net.lifetime import spawn

    with tempfile.TemporaryDirectory(prefix="privinfer-teehe-") as tmp:
        (port,) = free_ports(1)
        ready = Path(tmp) / "ready"
        cmd = [sys.executable, "-m", "privinfer.cli", "tee+he", "serve", "--model"]
        cmd += [str(model.source), "--port", str(port), "--dir", str(Path(tmp) / "srv")]
        cmd += ["--ready-file", str(ready)]
        if os.geteuid() != 0:
            print("tee+he: not root, so the local enclave runs as you", file=sys.stderr)
            cmd.append("--insecure-same-user")
        proc = spawn(cmd, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise InputError("The local tee+he server did not start.")
                time.sleep(0.2)
            yield f"127.0.0.1:{port}", str(Path(tmp) / "srv")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class TeeHeMode(Mode):
    name = "tee+he"
    summary = (
        "CKKS on a server that holds the weights; an attested enclave holds the key and "
        "refreshes, so the client only submits and fetches"
    )
    tasks = frozenset({"generate", "embed"})
    options = OPTIONS
    leakage = (
        *HE.leakage,
        "to the refresh enclave: the session's shape (refresh count, rotation steps) and masked "
        "values within 2^-41 of uniform",
        "when the client submits and fetches",
    )
    threat = _threat()
    bench_workloads = ("generate",)

    def security(self, model: Any | None, **params: Any) -> dict[str, Any]:
        from privinfer.he.refresh import DEFAULT_SIGMA
        from privinfer.teehe.protocol import expected_identity

        out = dict(HE.security(model))
        out["refresh_enclave"] = {
            "measurement": expected_identity().measurement.hex(),
            "refresh_masking_sigma": DEFAULT_SIGMA,
            "key_release": "X25519 + HKDF-SHA256 + AES-256-GCM channel bound to the verified quote",
            "key_lifetime": "one session; zeroed at session end, on refusal, on server disconnect",
            "collusion": "a server and an enclave that collude learn the prompt and the output",
        }
        return out

    def info(self, model: Any | None, **options: Any) -> dict[str, Any]:
        return {**HE.info(model), "summary": self.summary}

    @contextlib.contextmanager
    def services(self, model: Any, **options: Any) -> Iterator[dict[str, Any]]:
        if options.get("server"):
            yield options
            return
        with local_server(model) as (address, folder):
            yield {**options, "server": address, "teehe_dir": folder}

    @contextlib.contextmanager
    def _endpoint(self, model: Any, options: dict[str, Any]) -> Iterator[Any]:
        if options.get("server"):
            yield _endpoint(options["server"], options.get("teehe_dir"), options.get("root_cert"))
            return
        with local_server(model) as (address, folder):
            yield _endpoint(address, folder, options.get("root_cert"))

    def embed(
        self, model: Any, ids_list: list[list[int]], stats: EmbeddingStats, **options: Any
    ) -> torch.Tensor:
        """Embeddings [n, dim]: each text one job (attest, release key, submit, result)."""
        import torch

        from privinfer.teehe.client import submit_embedding

        t0 = time.perf_counter()
        outs, fig = [], {"rounds": 0, "bytes_to_server": 0, "bytes_to_client": 0,
                         "client_round_trips": 0}  # fmt: skip
        with self._endpoint(model, options) as endpoint:
            for ids in ids_list:
                out, f = submit_embedding(endpoint, model, ids)
                outs.append(out)
                fig["rounds"] += int(f.server.get("rounds", 0))
                fig["bytes_to_server"] += f.bytes_to_server
                fig["bytes_to_client"] += f.bytes_to_client
                fig["client_round_trips"] += f.client_round_trips
                fig["input_bytes"] = fig.get("input_bytes", 0) + f.input_bytes
                fig["output_bytes"] = fig.get("output_bytes", 0) + f.output_bytes
                fig["enclave"] = f.server.get("enclave")  # the last text's, per session
        vecs = torch.cat(outs)
        plain = torch.cat([model.plain().ops.reveal(model.plain().encode(i)) for i in ids_list])
        cos = torch.nn.functional.cosine_similarity(vecs, plain).tolist()
        fig = {**fig, "he_s": round(time.perf_counter() - t0, 3), "cosine_to_plain": cos}
        _record(stats.costs, stats.details, fig)
        stats.details["tee+he"] = stats.details.pop("he")
        print(
            f"tee+he: cosine to plaintext {', '.join(f'{c:.7f}' for c in cos)}; "
            f"{fig['he_s']:.1f} s; {fig['rounds']} refreshes by the enclave; client "
            f"{fig['bytes_to_server'] / 1e6:.2f} MB up, {fig['bytes_to_client'] / 1e6:.2f} MB down, "
            f"{fig['client_round_trips']} round trips during compute",
            file=sys.stderr,
        )
        return vecs

    def generate(
        self, model: Any, req: Request, stats: GenerationStats, **options: Any
    ) -> Iterator[int]:
        """Generate: the client decrypts each step's logits and sends the next token's row."""
        from privinfer.he.ckks import PARAMS_16384
        from privinfer.he.session import HeClient
        from privinfer.models.generate import check_budget, threaded_tokens, timed_stream
        from privinfer.teehe.client import generate

        prompt_ids = req.prompt_ids
        budget = check_budget(len(prompt_ids), req.max_new_tokens, model.cfg.max_context)
        ctx_t = _context_tokens(len(prompt_ids) + budget)
        if ctx_t > 64:
            raise InputError("mode tee+he supports prompt + new tokens <= 64 in this version")
        client = HeClient.create(
            PARAMS_16384, sampler=req.sampler, stop_ids=tuple(model.tokenizer.eos_ids),
            max_new_tokens=budget,
        )  # fmt: skip

        def produce(emit: Callable[[int], None]) -> None:
            with self._endpoint(model, options) as endpoint:
                f = generate(endpoint, model, client, list(prompt_ids), budget, ctx_t,
                             on_token=emit)  # fmt: skip
            figures = {"rounds": int(f.server.get("rounds", 0)),
                       "bytes_to_server": f.bytes_to_server,
                       "bytes_to_client": f.bytes_to_client,
                       "client_round_trips": f.client_round_trips}  # fmt: skip
            _record(stats.costs, stats.details, figures)
            stats.details["tee+he"] = stats.details.pop("he")

        tokens = threaded_tokens(produce)
        yield from timed_stream(tokens, stats, prompt_tokens=len(prompt_ids))
        stats.stop_reason = "length" if len(client.chosen) >= budget else "eos"


MODE = TeeHeMode()
