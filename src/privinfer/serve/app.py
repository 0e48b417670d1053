"""The proxy's routes: the OpenAI API (`/v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`, `/v1/models`), `/v1/privinfer/info`, `/health`, `/metrics` and the chat page.

Every request is validated whole (`checks`: fields, model, roles, prompt length against the
context) before the mode runs; a streamed request also waits for its first token before the
200, so a refusal by the mode is a 400 too (`respond`). After that a failure is an error event,
then `[DONE]`. Mode calls run on the backend's worker thread (`run`).
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from privinfer.errors import InputError
from privinfer.serve import checks, respond, run
from privinfer.serve import schemas as s
from privinfer.serve.backend import Backend
from privinfer.serve.errors import ApiError, bad_request
from privinfer.serve.metrics import CONTENT_TYPE, Metrics


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
        req = checks.parse(s.ChatRequest, await checks.read_json(request))
        checks.check_model(req.model, backend.lm, "chat")
        p = checks.common(backend, req)
        top = checks.logprobs_wanted(backend, req.logprobs, req.top_logprobs)
        ids = checks.chat_ids(backend, req)
        max_tokens = req.max_completion_tokens or req.max_tokens or checks.DEFAULT_MAX_TOKENS
        param = "max_completion_tokens" if req.max_completion_tokens else "messages"
        budget = checks.budget(backend, ids, max_tokens, param)
        make = run.choices(backend, ids, p, budget, top)
        return await respond.respond(backend, metrics, make, req, p, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = checks.parse(s.CompletionRequest, await checks.read_json(request))
        checks.check_model(req.model, backend.lm, "completion")
        p = checks.common(backend, req)
        top = checks.logprobs_wanted(
            backend, req.logprobs is not None, req.logprobs, field="logprobs"
        )
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise bad_request("prompt must be one string (batches are not supported)", "prompt")
        if not prompts[0].strip():
            raise bad_request("prompt is empty", "prompt")
        ids = backend.lm.tokenizer.encode(prompts[0])
        budget = checks.budget(backend, ids, req.max_tokens or 16, "prompt")
        make = run.choices(backend, ids, p, budget, top)
        return await respond.respond(backend, metrics, make, req, p, chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        req = checks.parse(s.EmbeddingRequest, await checks.read_json(request))
        checks.check_model(req.model, backend.em, "embedding")
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
            result = [r async for r in run.events(backend, make)][0]
        except ApiError:
            raise
        except BaseException as exc:
            raise run.mode_error(backend, exc) from None
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
        extra = {"mode": mode, **{k: respond.mode_totals(v) for k, v in result.details.items()
                                   if isinstance(v, dict)}}  # fmt: skip
        return s.EmbeddingList(
            data=data, model=em.name, usage=s.EmbeddingUsage(prompt_tokens=n, total_tokens=n),
            privinfer=extra,
        ).model_dump(exclude_none=True)  # fmt: skip

    return app


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}
