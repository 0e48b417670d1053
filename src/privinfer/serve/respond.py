"""Responses: a whole chat completion or completion, or its SSE stream (role chunk, a chunk per
token with the `privinfer` figures, finish chunk, usage if asked, then [DONE]; an error event
and [DONE] if the mode fails part way)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse

from privinfer.serve import schemas as s
from privinfer.serve.backend import Backend
from privinfer.serve.errors import ApiError
from privinfer.serve.metrics import Metrics
from privinfer.serve.run import events, mode_error
from privinfer.serve.stream import Finish, Piece


def _privinfer(backend: Backend, fin: Finish) -> dict[str, Any]:
    out = {"mode": backend.mode.name, **fin.figures}
    for key in ("mpc", "he"):
        if key in fin.details:
            out[key] = mode_totals(fin.details[key])
    return out


def mode_totals(d: dict[str, Any]) -> dict[str, Any]:
    """The mode's own figures without per-token lists (kept short for the page)."""
    if "parties" in d:  # mpc: per-party prefill and mean decode rounds, bytes
        return {
            pid: {
                k: v
                for k, v in row.items()
                if k
                in (
                    "prefill",
                    "decode_rounds_per_token_mean",
                    "decode_bytes_sent_per_token_mean",
                    "bytes_to_client",
                    "bytes_from_client",
                )
            }  # fmt: skip
            for pid, row in d["parties"].items()
        }
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str))}


def _fingerprint(backend: Backend, fin: Finish | None) -> str:
    if fin is not None and "tee" in fin.details:
        return str(fin.details["tee"]["measurement"])  # verified for this very request
    return backend.fingerprint


async def respond(
    backend: Backend, metrics: Metrics, make: Callable[[], Iterator[Any]], req: Any,
    p: dict[str, Any], *, chat: bool,
) -> Any:  # fmt: skip
    mode = backend.mode.name
    cid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    created = int(time.time())
    t0 = time.perf_counter()
    metrics.in_flight.inc()
    stream = events(backend, make)
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = None
    except BaseException as exc:
        metrics.in_flight.dec()
        metrics.finished.labels(mode, "error").inc()
        raise mode_error(backend, exc) from None
    if not req.stream:
        try:
            items = ([first] if first is not None else []) + [e async for e in stream]
        except BaseException as exc:
            metrics.finished.labels(mode, "error").inc()
            raise mode_error(backend, exc) from None
        finally:
            metrics.in_flight.dec()
        return _whole(backend, metrics, items, req.model, cid, created, chat, t0)
    return EventSourceResponse(
        _sse(backend, metrics, first, stream, req.model, cid, created, chat, p, t0),
        ping=15,
    )


def _observe(backend: Backend, metrics: Metrics, fin: Finish) -> None:
    mode = backend.mode.name
    metrics.tokens.labels(mode).inc(fin.completion_tokens)
    metrics.prompt_tokens.labels(mode).inc(fin.prompt_tokens)
    metrics.finished.labels(mode, fin.reason).inc()


def _whole(
    backend: Backend, metrics: Metrics, items: list[Any], model: str, cid: str, created: int,
    chat: bool, t0: float,
) -> dict[str, Any]:  # fmt: skip
    texts: dict[int, list[str]] = {}
    lps: dict[int, list[dict[str, Any]]] = {}
    fins: list[Finish] = []
    for it in items:
        if isinstance(it, Piece):
            texts.setdefault(it.choice, []).append(it.text)
            if it.logprob is not None:
                lps.setdefault(it.choice, []).append(it.logprob)
            if len(it.figures) and it.figures["tokens"] > 1:
                metrics.token_seconds.labels(backend.mode.name).observe(it.figures["token_s"])
        else:
            texts.setdefault(it.choice, []).append(it.text)
            fins.append(it)
            _observe(backend, metrics, it)
    metrics.request_seconds.labels(backend.mode.name, "generate").observe(time.perf_counter() - t0)
    prompt = fins[0].prompt_tokens if fins else 0
    completion = sum(f.completion_tokens for f in fins)
    usage = s.Usage(prompt_tokens=prompt, completion_tokens=completion,
                    total_tokens=prompt + completion)  # fmt: skip
    extra = _privinfer(backend, fins[-1]) if fins else None
    fp = _fingerprint(backend, fins[-1] if fins else None)
    if chat:
        choices = [
            s.ChatChoice(
                index=f.choice,
                message=s.AssistantMessage(content="".join(texts.get(f.choice, []))),
                finish_reason=f.reason,
                logprobs=s.ChoiceLogprobs(content=lps.get(f.choice, []))
                if f.choice in lps
                else None,
            )
            for f in fins
        ]
        return s.ChatCompletion(id=cid, created=created, model=model, system_fingerprint=fp,
                                choices=choices, usage=usage, privinfer=extra).model_dump()  # fmt: skip
    choices2 = [
        s.CompletionChoice(
            index=f.choice,
            text="".join(texts.get(f.choice, [])),
            finish_reason=f.reason,
            logprobs=_completion_logprobs(lps[f.choice]) if f.choice in lps else None,
        )  # fmt: skip
        for f in fins
    ]
    return s.Completion(id=cid, created=created, model=model, system_fingerprint=fp,
                        choices=choices2, usage=usage, privinfer=extra).model_dump()  # fmt: skip


def _completion_logprobs(entries: list[dict[str, Any]]) -> s.CompletionLogprobs:
    offsets, pos = [], 0
    for e in entries:
        offsets.append(pos)
        pos += len(e["token"])
    return s.CompletionLogprobs(
        tokens=[e["token"] for e in entries],
        token_logprobs=[e["logprob"] for e in entries],
        top_logprobs=[{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        text_offset=offsets,
    )


async def _sse(
    backend: Backend, metrics: Metrics, first: Any, events: AsyncIterator[Any], model: str,
    cid: str, created: int, chat: bool, p: dict[str, Any], t0: float,
) -> AsyncIterator[dict[str, str]]:  # fmt: skip
    """SSE events: role chunk per choice, a chunk per token (text + `privinfer` figures), a
    finish chunk per choice, the usage chunk if asked for, then [DONE]; an error event and
    [DONE] if the mode fails part way."""
    mode = backend.mode.name
    fp = backend.fingerprint
    started: set[int] = set()
    prompt = completion = 0

    def chunk(choice: int, text: str | None, finish: str | None = None, role: bool = False,
              lp: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
        if chat:
            obj: BaseModel = s.ChatChunk(
                id=cid, created=created, model=model, system_fingerprint=fp,
                choices=[s.ChunkChoice(
                    index=choice, delta=s.Delta(role="assistant" if role else None, content=text),
                    finish_reason=finish,
                    logprobs=s.ChoiceLogprobs(content=[lp]) if lp is not None else None,
                )],
                privinfer=extra,
            )  # fmt: skip
        else:
            obj = s.Completion(
                id=cid, created=created, model=model, system_fingerprint=fp,
                choices=[s.CompletionChoice(
                    index=choice, text=text or "", finish_reason=finish,
                    logprobs=_completion_logprobs([lp]) if lp is not None else None,
                )],
                privinfer=extra,
            )  # fmt: skip
        return {"data": obj.model_dump_json(exclude_none=True)}

    async def all_items() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for it in events:
            yield it

    try:
        async for it in all_items():
            if chat and it.choice not in started:
                started.add(it.choice)
                yield chunk(it.choice, "", role=True)
            if isinstance(it, Piece):
                if it.figures["tokens"] > 1:
                    metrics.token_seconds.labels(mode).observe(it.figures["token_s"])
                if it.text or it.logprob is not None:
                    yield chunk(it.choice, it.text, lp=it.logprob,
                                extra={"mode": mode, **it.figures})  # fmt: skip
                else:
                    yield chunk(it.choice, "", extra={"mode": mode, **it.figures})
            else:
                _observe(backend, metrics, it)
                prompt = it.prompt_tokens
                completion += it.completion_tokens
                fp = _fingerprint(backend, it)
                if it.text:
                    yield chunk(it.choice, it.text)
                yield chunk(it.choice, None if chat else "", finish=it.reason,
                            extra=_privinfer(backend, it))  # fmt: skip
        if p["include_usage"]:
            usage = s.Usage(prompt_tokens=prompt, completion_tokens=completion,
                            total_tokens=prompt + completion)  # fmt: skip
            cls = s.ChatChunk if chat else s.Completion
            obj = cls(id=cid, created=created, model=model, system_fingerprint=fp, choices=[],
                      usage=usage)  # fmt: skip
            yield {"data": obj.model_dump_json(exclude_none=True)}
        metrics.request_seconds.labels(mode, "generate").observe(time.perf_counter() - t0)
    except ApiError as exc:
        yield {"data": json.dumps(exc.body())}
    except Exception as exc:  # noqa: BLE001 - reported in the stream, the server goes on
        metrics.finished.labels(mode, "error").inc()
        yield {"data": json.dumps(mode_error(backend, exc).body())}
    finally:
        metrics.in_flight.dec()
    yield {"data": "[DONE]"}
