"""HE server: runs BERT embeddings or LLaMA generation on ciphertexts for remote key holders.

Security assumption: semi-honest server holding the weights in plaintext and, per session, only
the client's public, relinearisation and Galois keys (`CkksContext.from_public`); it never
holds a secret key, never sees token ids (the client uploads encrypted embedding rows) and sees
only masked values during refresh. A session that fails (wrong key, another session's
ciphertexts, insecure parameters, too long input) gets a one-sentence error and the server
goes on serving other clients. Nothing about a client's data is logged.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from privinfer.errors import InputError, PrivinferError
from privinfer.he.ckks import CkksParams
from privinfer.he.ops import HeOps
from privinfer.he.ranges import HeRanges, minilm_ranges
from privinfer.he.session import pack_meta, unpack_meta
from privinfer.he.transport import Connection, TransportError, accept, listen

MAX_EMBED_TOKENS = 32  # T <= 32 keeps a BERT-base-width head block in one ciphertext


class RemoteKeyHolder:
    """The server's view of a client over a `Connection` (see `he.session.KeyHolder`)."""

    def __init__(self, conn: Connection, bundle: dict[str, bytes]) -> None:
        self.conn, self._bundle = conn, bundle

    def public_bundle(self) -> dict[str, bytes]:
        return self._bundle

    def _ask(self, kind: str, meta: dict[str, Any], payload: bytes = b"") -> tuple[dict, bytes]:
        self.conn.send(kind, meta, payload)
        _, got, data = self.conn.recv(kind)
        return got, data

    def galois(self, steps) -> tuple[list[int], bytes]:
        meta, data = self._ask("KEYS", {"steps": [int(s) for s in steps]})
        return [int(s) for s in meta.get("steps", [])], data

    def refresh(self, payload: bytes) -> bytes:
        return self._ask("RFSH", {}, payload)[1]

    def upload(self, meta: dict[str, Any], rows: torch.Tensor | None) -> bytes:
        return self._ask("UPLD", meta)[1]  # `rows` (dummy ids on a server) is never used

    def reveal(self, meta: dict[str, Any], payload: bytes) -> None:
        self._ask("OUTP", meta, payload)
        return None

    def choose(self, meta: dict[str, Any], payload: bytes) -> int | None:
        got, _ = self._ask("LOGT", meta, payload)
        return None if got.get("stop") else 0


def pack_bundle(bundle: dict[str, bytes]) -> bytes:
    sizes = {k: len(v) for k, v in bundle.items()}
    return pack_meta(sizes, b"".join(bundle[k] for k in sizes))


def unpack_bundle(data: bytes) -> dict[str, bytes]:
    sizes, blob = unpack_meta(data)
    out, pos = {}, 0
    for k, n in sizes.items():
        if k not in {"params", "public_key", "relin_keys", "galois_keys", "galois_steps"}:
            raise InputError("Unexpected field in the HE key bundle.")
        out[k] = blob[pos : pos + int(n)]
        pos += int(n)
    if pos != len(blob) or "params" not in out or "public_key" not in out:
        raise InputError("Malformed HE key bundle.")
    return out


def embed_session(model: Any, ops: HeOps, rows: int) -> torch.Tensor:
    """Server side of one embedding: the rows come encrypted from the key holder."""
    if not 0 < rows <= MAX_EMBED_TOKENS:
        raise InputError(f"HE embedding takes 1..{MAX_EMBED_TOKENS} tokens, got {rows}.")
    bert = model.build(ops)
    return ops.reveal(bert.encode([0] * rows))


def generation_session(
    model: Any, ops: HeOps, ids: list[int], max_new_tokens: int
) -> Iterator[int]:
    """Server side of one generation; yields after each token the key holder chose."""
    llama = model.build(ops)
    cache = llama.new_cache()
    pos = len(ids)
    logits = llama.forward(ids, cache, 0)
    for step in range(max_new_tokens):
        tok = ops.next_token(logits, None, step)  # type: ignore[arg-type]
        if tok < 0:
            return
        yield tok
        if step + 1 == max_new_tokens or pos >= ops.context_tokens:
            return
        logits = llama.forward([tok], cache, pos)
        pos += 1


def model_ranges(model: Any) -> HeRanges:
    """Public calibrated ranges for a served model (MiniLM-L6 built in; else calibrate now)."""
    if getattr(model, "kind", "") == "bert" and model.cfg.hidden_size == 384:
        return minilm_ranges()
    from privinfer.he.calibrate import SENTENCES, calibrate_decoder, calibrate_encoder

    if model.kind == "bert":
        rec = calibrate_encoder(model, [model.token_ids(s) for s in SENTENCES[:6]])
    else:
        rec = calibrate_decoder(model, [model.tokenizer.encode(s) for s in SENTENCES[:4]])
    return HeRanges.from_calibration(rec)


def handle_session(conn: Connection, model: Any, ranges: HeRanges, log: Callable[[str], None]):
    """One client session: HELO (task + public keys) ... DONE, or ERR with one sentence."""
    t0 = time.perf_counter()
    try:
        _, meta, payload = conn.recv("HELO")
        bundle = unpack_bundle(payload)
        CkksParams.from_bytes(bundle["params"]).check_security()
        task = meta.get("task")
        holder = RemoteKeyHolder(conn, bundle)
        if task == "embed" and model.kind == "bert":
            if not 0 < int(meta.get("rows", 0)) <= MAX_EMBED_TOKENS:
                raise InputError(f"HE embedding takes 1..{MAX_EMBED_TOKENS} tokens per text.")
            ops = HeOps(keyholder=holder, ranges=ranges, progress=log)
            embed_session(model, ops, int(meta.get("rows", 0)))
        elif task == "generate" and model.kind == "llama":
            ctx_t = int(meta.get("context_tokens", 0))
            if ctx_t < 2 or ctx_t & (ctx_t - 1) or ctx_t > 64:
                raise InputError("HE context_tokens must be a power of two in [2, 64].")
            ops = HeOps(keyholder=holder, ranges=ranges, context_tokens=ctx_t, progress=log)
            for _ in generation_session(
                model, ops, [0] * int(meta["prompt_len"]), int(meta["max_new_tokens"])
            ):
                pass
        else:
            raise InputError(f"This HE server does not run task {task!r} for its model.")
        stats = ops.refresher.stats
        conn.send("DONE", {"rounds": stats.rounds, "server_s": round(time.perf_counter() - t0, 3)})
        log(f"session done in {time.perf_counter() - t0:.1f} s, {stats.rounds} refresh rounds")
    except TransportError as exc:
        log(f"session dropped: {exc}")
    except PrivinferError as exc:
        log(f"session refused: {exc}")
        try:
            conn.send("ERR", {"message": str(exc)})
        except TransportError:
            pass
    except (KeyError, ValueError, TypeError):
        log("session refused: malformed request")
        try:
            conn.send("ERR", {"message": "Malformed HE request."})
        except TransportError:
            pass
    finally:
        conn.close()


def serve(
    model: Any,
    cluster,
    host: str,
    port: int,
    sessions: int = 0,
    ready: Callable[[int], None] | None = None,
    ranges: HeRanges | None = None,
) -> None:
    """Serve sessions one after another (forever when sessions == 0)."""

    def log(msg: str) -> None:
        print(f"he-server: {msg}", file=sys.stderr, flush=True)

    ranges = ranges or model_ranges(model)
    srv, ctx = listen(cluster, host, port)
    log(f"serving {getattr(model, 'name', 'model')} on {host}:{srv.getsockname()[1]}")
    if ready is not None:
        ready(srv.getsockname()[1])
    done = 0
    with srv:
        while sessions == 0 or done < sessions:
            try:
                conn = accept(srv, ctx)
            except TransportError as exc:
                log(str(exc))
                done += 1
                continue
            handle_session(conn, model, ranges, log)
            done += 1
