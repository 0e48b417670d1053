"""The proxy's routes: the OpenAI API (`/v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`, `/v1/models`), `/v1/privinfer/info`, `/health`, `/metrics` and the chat page.

Every request is validated whole (fields, model, roles, prompt length against the context)
before the mode runs; a streamed request also waits for its first token before the 200, so a
refusal by the mode is a 400 too. After that a failure is an error event, then `[DONE]`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sse_starlette.sse import EventSourceResponse

from privinfer.errors import InputError, PrivinferError, SecurityError
from privinfer.models.generate import check_budget
from privinfer.models.ops import Sampler
from privinfer.modes import SEED_MAX
from privinfer.serve import schemas as s
from privinfer.serve.backend import Backend
from privinfer.serve.errors import ApiError, bad_request, from_mode, from_validation
from privinfer.serve.metrics import CONTENT_TYPE, Metrics
from privinfer.serve.stream import Finish, Piece, run_choice

MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_TOKENS = 128
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
log = logging.getLogger("privinfer.serve")


# --- request checks ----------------------------------------------------------------------------
async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def _parse(cls: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        req = cls.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None
    for name in req.model_extra or {}:
        if name in s.UNSUPPORTED:
            raise bad_request(
                f"{name} is not supported by privinfer serve", name, "unsupported_parameter"
            )
        raise bad_request(f"unrecognized request argument: {name}", name, "unknown_parameter")
    return req


def _check_model(name: str, model: Any | None, what: str) -> None:
    if model is None or name != model.name:
        served = f"this proxy serves {model.name}" if model is not None else f"no {what} model"
        raise ApiError(
            400, f"the model {name!r} does not exist here: {served}", param="model",
            code="model_not_found",
        )  # fmt: skip


def _common(backend: Backend, req: Any) -> dict[str, Any]:
    """Sampling, budget, stop strings and n of a chat or completion request."""
    if req.presence_penalty or req.frequency_penalty:
        name = "presence_penalty" if req.presence_penalty else "frequency_penalty"
        raise bad_request(f"{name} other than 0 is not supported", name, "unsupported_parameter")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > s.STOP_MAX:
        raise bad_request(f"stop takes at most {s.STOP_MAX} strings", "stop")
    if any(not x for x in stops):
        raise bad_request("stop strings must not be empty", "stop")
    opts = req.stream_options or {}
    if req.stream_options is not None and (
        set(opts) - {"include_usage"} or not isinstance(opts.get("include_usage", False), bool)
    ):
        raise bad_request("stream_options takes only include_usage (a boolean)", "stream_options")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options is only allowed with stream=true", "stream_options")
    return {
        "temperature": 0.0 if req.temperature is None else req.temperature,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "seed": req.seed,
        "n": req.n or 1,
        "stops": stops,
        "include_usage": bool(opts.get("include_usage")),
    }


def _budget(backend: Backend, ids: list[int], max_tokens: int, param: str) -> int:
    try:
        return check_budget(len(ids), max_tokens, backend.lm.cfg.max_context)
    except InputError as exc:
        raise bad_request(str(exc), param, "context_length_exceeded") from None


def _chat_ids(backend: Backend, req: s.ChatRequest) -> list[int]:
    msgs = []
    for i, m in enumerate(req.messages):
        role = ROLES.get(m.role)
        if role is None:
            hint = " (tool calling is not supported)" if m.role in ("tool", "function") else ""
            raise bad_request(
                f"messages[{i}].role must be system, developer, user or assistant{hint}",
                f"messages[{i}].role",
                "invalid_value",
            )
        if m.content is None:
            raise bad_request(f"messages[{i}].content is required", f"messages[{i}].content")
        msgs.append({"role": role, "content": m.text()})
    try:
        return backend.lm.prompt_ids(msgs, chat=True)
    except InputError as exc:
        raise bad_request(str(exc), "messages") from None


# --- running the mode on the worker thread ----------------------------------------------------
_END = object()


async def _events(backend: Backend, make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
    """Run `make()` on the backend's worker thread; yield its items here. Leaving early (the
    client went away) tells the worker to close the generator at the next item."""
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(out.put_nowait, item)

    def job() -> None:
        try:
            if cancel.is_set():
                return
            gen = make()
            try:
                for item in gen:
                    put(item)
                    if cancel.is_set():
                        break
            finally:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # noqa: BLE001 - handed to the request's task
            put(exc)
        finally:
            put(_END)

    assert backend.worker is not None
    backend.worker.submit(job)
    try:
        while (item := await out.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()


def _mode_error(backend: Backend, exc: BaseException) -> ApiError:
    """A failure of the mode as an API error: the plug-in's own sentence for user errors and
    privinfer errors (which never carry prompt or output), the exception type otherwise."""
    if isinstance(exc, InputError):
        return from_mode(exc)
    if isinstance(exc, SecurityError) or type(exc).__name__ == "EvidenceRejected":
        return ApiError(502, f"attestation failed: {exc}", etype="attestation_error")
    if isinstance(exc, PrivinferError):
        return ApiError(502, f"mode {backend.mode.name} failed: {exc}", etype="server_error")
    if isinstance(exc, OSError):
        return ApiError(
            502, f"mode {backend.mode.name} failed ({type(exc).__name__})", etype="server_error"
        )
    log.error("internal error in mode %s: %s", backend.mode.name, type(exc).__name__)
    return ApiError(500, f"internal error ({type(exc).__name__})", etype="server_error")


def _choices(backend: Backend, ids: list[int], p: dict[str, Any], budget: int, top: int | None):
    def make() -> Iterator[Piece | Finish]:
        for c in range(p["n"]):
            seed = p["seed"] if p["seed"] is None else (p["seed"] + c) % (SEED_MAX + 1)
            sampler = Sampler(temperature=p["temperature"], top_p=p["top_p"], seed=seed)
            yield from run_choice(
                backend.mode, backend.lm, backend.gen_options, ids, choice=c, sampler=sampler,
                max_new_tokens=budget, stops=p["stops"], top_logprobs=top,
            )  # fmt: skip

    return make


def _privinfer(backend: Backend, fin: Finish) -> dict[str, Any]:
    out = {"mode": backend.mode.name, **fin.figures}
    for key in ("mpc", "he"):
        if key in fin.details:
            out[key] = _mode_totals(fin.details[key])
    return out


def _mode_totals(d: dict[str, Any]) -> dict[str, Any]:
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


# --- the app ----------------------------------------------------------------------------------
def create_app(backend: Backend) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics(backend.mode.name)
    mode = backend.mode.name
    app.state.backend, app.state.metrics = backend, metrics

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(404)
    async def not_found(request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(
            ApiError(404, "no such route", code="not_found").body(), status_code=404
        )

    @app.exception_handler(405)
    async def not_allowed(request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(
            ApiError(405, f"method {request.method} is not allowed here").body(), status_code=405
        )

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(getattr(route, "path", "other"), str(response.status_code)).inc()
        return response

    def model_card(m: Any) -> s.ModelCard:
        return s.ModelCard(id=m.name, created=backend.started, owned_by=f"privinfer-{mode}")

    def served() -> list[Any]:
        return [m for m in (backend.lm, backend.em) if m is not None]

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("privinfer.serve").joinpath("page/index.html").read_text("utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "mode": mode, "models": backend.model_ids()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return s.ModelList(data=[model_card(m) for m in served()]).model_dump()

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        for m in served():
            if m.name == model_id:
                return model_card(m).model_dump()
        raise ApiError(404, f"the model {model_id!r} does not exist here", param="model",
                       code="model_not_found")  # fmt: skip

    @app.get("/v1/privinfer/info")
    async def info() -> dict[str, Any]:
        return {
            "mode": mode,
            "summary": backend.mode.summary,
            "protection": backend.info,
            "leakage": list(backend.mode.leakage),
            "system_fingerprint": backend.fingerprint,
            "model": backend.lm.name if backend.lm is not None else None,
            "embedding_model": backend.em.name if backend.em is not None else None,
            "logprobs": backend.mode.reveals_logits,
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        req = _parse(s.ChatRequest, await _json(request))
        _check_model(req.model, backend.lm, "chat")
        p = _common(backend, req)
        top = _logprobs(backend, req.logprobs, req.top_logprobs)
        ids = _chat_ids(backend, req)
        max_tokens = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
        param = "max_completion_tokens" if req.max_completion_tokens else "messages"
        budget = _budget(backend, ids, max_tokens, param)
        make = _choices(backend, ids, p, budget, top)
        return await _respond(backend, metrics, make, req, p, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = _parse(s.CompletionRequest, await _json(request))
        _check_model(req.model, backend.lm, "completion")
        p = _common(backend, req)
        top = _logprobs(backend, req.logprobs is not None, req.logprobs, field="logprobs")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise bad_request("prompt must be one string (batches are not supported)", "prompt")
        if not prompts[0].strip():
            raise bad_request("prompt is empty", "prompt")
        ids = backend.lm.tokenizer.encode(prompts[0])
        budget = _budget(backend, ids, req.max_tokens or 16, "prompt")
        make = _choices(backend, ids, p, budget, top)
        return await _respond(backend, metrics, make, req, p, chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        req = _parse(s.EmbeddingRequest, await _json(request))
        _check_model(req.model, backend.em, "embedding")
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts or not all(isinstance(t, str) for t in texts):
            raise bad_request("input must be a string or a non-empty list of strings", "input")
        if len(texts) > 64:
            raise bad_request("input takes at most 64 texts", "input")
        em = backend.em
        try:
            ids = [em.token_ids(t) for t in texts]
        except InputError as exc:
            raise bad_request(str(exc), "input") from None

        def make() -> Iterator[Any]:
            yield em.embed_with_stats(texts, mode=mode, **_given(backend.embed_options))

        t0 = time.perf_counter()
        metrics.in_flight.inc()
        try:
            result = [r async for r in _events(backend, make)][0]
        except ApiError:
            raise
        except BaseException as exc:
            raise _mode_error(backend, exc) from None
        finally:
            metrics.in_flight.dec()
        metrics.request_seconds.labels(mode, "embed").observe(time.perf_counter() - t0)
        data = []
        for i, v in enumerate(result.vectors.tolist()):
            emb: Any = v
            if req.encoding_format == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            data.append(s.EmbeddingItem(index=i, embedding=emb))
        n = sum(len(x) for x in ids)
        extra = {"mode": mode, **{k: _mode_totals(v) for k, v in result.details.items()
                                   if isinstance(v, dict)}}  # fmt: skip
        return s.EmbeddingList(
            data=data, model=em.name, usage=s.EmbeddingUsage(prompt_tokens=n, total_tokens=n),
            privinfer=extra,
        ).model_dump(exclude_none=True)  # fmt: skip

    return app


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _logprobs(
    backend: Backend, want: bool | None, top: int | None, field: str = "top_logprobs"
) -> int | None:
    """The number of top logprobs to return per token (0: only the chosen one), or None."""
    if not want:
        if top is not None and field == "top_logprobs":
            raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
        return None
    if not backend.mode.reveals_logits:
        raise bad_request(
            f"logprobs are not available in mode {backend.mode.name}: the mode reveals only the "
            "chosen tokens to the client, never logits",
            "logprobs",
            "unsupported_by_mode",
        )
    return top or 0


async def _respond(
    backend: Backend, metrics: Metrics, make: Callable[[], Iterator[Any]], req: Any,
    p: dict[str, Any], *, chat: bool,
) -> Any:  # fmt: skip
    mode = backend.mode.name
    cid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    created = int(time.time())
    t0 = time.perf_counter()
    metrics.in_flight.inc()
    events = _events(backend, make)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None
    except BaseException as exc:
        metrics.in_flight.dec()
        metrics.finished.labels(mode, "error").inc()
        raise _mode_error(backend, exc) from None
    if not req.stream:
        try:
            items = ([first] if first is not None else []) + [e async for e in events]
        except BaseException as exc:
            metrics.finished.labels(mode, "error").inc()
            raise _mode_error(backend, exc) from None
        finally:
            metrics.in_flight.dec()
        return _whole(backend, metrics, items, req.model, cid, created, chat, t0)
    return EventSourceResponse(
        _sse(backend, metrics, first, events, req.model, cid, created, chat, p, t0),
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
        yield {"data": json.dumps(_mode_error(backend, exc).body())}
    finally:
        metrics.in_flight.dec()
    yield {"data": "[DONE]"}
