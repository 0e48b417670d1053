"""HE mode (CKKS): embeddings and generation with a client-held secret key; registers "he".

Security assumption: semi-honest server with plaintext weights, client with the secret key (see
docs/he.md for the threat model and exactly what leaks). Without `server=` the server runs as a
separate local process (`privinfer he serve`) over mutually authenticated TLS; `in_process=True`
simulates both sides in this process (tests, benchmarks) with separate key contexts.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch

from privinfer.errors import InputError
from privinfer.he.ckks import PARAMS_16384
from privinfer.he.ops import HeOps
from privinfer.he.server import generation_session, model_ranges
from privinfer.he.session import HeClient, LocalKeyHolder, client_rows
from privinfer.models.generate import GenerationStats, check_budget
from privinfer.models.ops import Sampler
from privinfer.modes import register

last_stats: dict[str, Any] = {}  # rounds, bytes each way, seconds of the latest HE call


def _progress(msg: str) -> None:
    print(f"he: {msg}", file=sys.stderr, flush=True)


def embed_he(
    model: Any, ids_list: list[list[int]], *, server: str | None = None, in_process: bool = False
) -> torch.Tensor:
    """Embeddings [n, dim] computed under CKKS; prints a fidelity/cost line on stderr."""
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
        stats = {
            "rounds": rounds,
            "bytes_to_server": sent,
            "bytes_to_client": received,
        }
    else:
        from privinfer.he.client import embed_remote

        vecs, stats = embed_remote(model, ids_list, server)
    plain = torch.cat([model.plain().ops.reveal(model.plain().encode(i)) for i in ids_list])
    cos = torch.nn.functional.cosine_similarity(vecs, plain).tolist()
    last_stats.clear()
    last_stats.update(stats, he_s=round(time.perf_counter() - t0, 3), cosine_to_plain=cos)
    print(
        f"he: cosine to plaintext {', '.join(f'{c:.7f}' for c in cos)}; "
        f"{last_stats['he_s']:.1f} s; {stats['rounds']} refresh rounds; "
        f"{stats['bytes_to_server'] / 1e6:.1f} MB to server, "
        f"{stats['bytes_to_client'] / 1e6:.1f} MB to client",
        file=sys.stderr,
    )
    return vecs


def _context_tokens(n: int) -> int:
    return max(2, 1 << (n - 1).bit_length())


def generate_he(
    model: Any,
    prompt_ids: list[int],
    *,
    sampler: Sampler,
    max_new_tokens: int,
    stats: GenerationStats,
    server: str | None = None,
    in_process: bool = False,
    context_tokens: int | None = None,
) -> Iterator[int]:
    """Generate under CKKS: the client picks every token from logits only it can decrypt."""
    budget = check_budget(len(prompt_ids), max_new_tokens, model.cfg.max_context)
    ctx_t = context_tokens or _context_tokens(len(prompt_ids) + budget)
    if ctx_t > 64:
        raise InputError("HE generation supports prompt + new tokens <= 64 in this version.")
    stats.prompt_tokens = len(prompt_ids)
    client = HeClient.create(
        PARAMS_16384,
        sampler=sampler,
        stop_ids=tuple(model.tokenizer.eos_ids),
        max_new_tokens=budget,
    )
    events: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            if in_process:
                ops = HeOps(
                    keyholder=LocalKeyHolder(client),
                    ranges=model_ranges(model),
                    context_tokens=ctx_t,
                    progress=_progress,
                )
                emitted = 0
                for _ in generation_session(model, ops, list(prompt_ids), budget):
                    for tok in client.chosen[emitted:]:
                        events.put(("tok", tok))
                    emitted = len(client.chosen)
                for tok in client.chosen[emitted:]:  # the last pick ends the session
                    events.put(("tok", tok))
            else:
                _remote_generation(model, client, prompt_ids, budget, ctx_t, server, events)
            events.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            events.put(("err", exc))

    threading.Thread(target=run, daemon=True).start()
    t0 = time.perf_counter()
    first = True
    while True:
        kind, value = events.get()
        if kind == "err":
            raise value
        if kind == "end":
            stats.stop_reason = "length" if len(client.chosen) >= budget else "eos"
            return
        now = time.perf_counter()
        if first:
            stats.prefill_s, first = now - t0, False
        else:
            stats.token_s.append(now - t0)
        t0 = now
        stats.new_tokens += 1
        yield value


def _remote_generation(model, client, prompt_ids, budget, ctx_t, server, events) -> None:
    from privinfer.he.client import _server_for, run_client_session
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
                on_token=lambda tok: events.put(("tok", tok)),
            )
        finally:
            conn.close()
    last_stats.clear()
    last_stats.update(
        rounds=int(done.get("rounds", 0)),
        bytes_to_server=conn.bytes_sent,
        bytes_to_client=conn.bytes_received,
    )


register("he", generate=generate_he, embed=embed_he)
