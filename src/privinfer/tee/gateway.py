"""OpenAI-compatible gateway on the user's machine: plain /v1 API in, attested + encrypted TEE requests out.

Security assumption: the gateway runs on the user's side (localhost by default) and is as trusted
as the user's own client: it sees prompts and answers in the clear, exactly like a local OpenAI
client would. Every completion attests a fresh enclave session (fresh nonce, pinned root, pinned
measurement) before the prompt leaves this process, and only AES-GCM records go to the server.
"""

from __future__ import annotations

import itertools
import json
import secrets
import sys
import time
from collections.abc import Generator, Iterator
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.concurrency import run_in_threadpool

from privinfer.errors import InputError, PrivinferError, SecurityError
from privinfer.tee.client import Session, TeeClient, TeeResult, claims_summary
from privinfer.tee.protocol import SEED_MAX, RequestRefused, TeeServerError

MAX_BODY = 1 << 20


def _oai_error(status: int, message: str, etype: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": etype, "param": None, "code": code}},
        status_code=status,
    )


Finite = Annotated[float, Field(allow_inf_nan=False)]


class CompletionNumbers(BaseModel):
    """The numbers of a chat completion request, checked before anything is sent: strict
    integers (a JSON 1e400 reads as inf, which is no integer), finite floats, OpenAI's ranges
    where privinfer has no narrower one. Other fields pass through (`stop`, `tools`, ... are
    ignored)."""

    model_config = ConfigDict(extra="allow")

    n: StrictInt | None = Field(None, ge=1, le=1)
    max_tokens: StrictInt | None = Field(None, ge=1, le=SEED_MAX)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=SEED_MAX)
    seed: StrictInt | None = Field(None, ge=0, le=SEED_MAX)
    temperature: Finite | None = Field(None, ge=0)
    top_p: Finite | None = Field(None, gt=0, le=1)
    stream: bool | None = None
    model: str | None = None


def _field_error(exc: ValidationError) -> str:
    """One sentence naming the first bad field, e.g. `max_tokens is invalid: input should be a
    valid integer`."""
    err = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or "the body"
    msg = str(err["msg"]).rstrip(".")
    if field == "n" and err["type"] in ("less_than_equal", "greater_than_equal"):
        return "only n=1 is supported"
    return f"{field} is invalid: {msg[:1].lower()}{msg[1:]}"


def _request_from(body: dict[str, Any]) -> dict[str, Any]:
    try:
        nums = CompletionNumbers.model_validate(body)
    except ValidationError as exc:
        raise InputError(_field_error(exc)) from None
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise InputError("messages must be a non-empty list")
    messages = []
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InputError("each message needs a role and a content")
        content = m.get("content", "")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        if not isinstance(content, str):
            raise InputError("message content must be text")
        messages.append({"role": m["role"], "content": content})
    return {
        "messages": messages,
        "chat": True,
        "max_new_tokens": nums.max_completion_tokens or nums.max_tokens or 128,
        "temperature": nums.temperature if nums.temperature is not None else 0.0,
        "top_p": nums.top_p if nums.top_p is not None else 1.0,
        "seed": nums.seed,
    }


def _refusal(exc: InputError) -> str:
    """The enclave's own sentence for a request it refused; any other InputError as it is."""
    return exc.message if isinstance(exc, RequestRefused) else str(exc)


def _finish(res: TeeResult) -> str:
    return "stop" if res.stop_reason == "eos" else "length"


def _usage(res: TeeResult) -> dict[str, int]:
    p = int(res.enclave.get("prompt_tokens") or 0)
    return {
        "prompt_tokens": p,
        "completion_tokens": len(res.token_ids),
        "total_tokens": p + len(res.token_ids),
    }


def create_gateway_app(client: TeeClient, model_name: str = "smollm2-135m") -> FastAPI:
    """The gateway's app: /v1/models and /v1/chat/completions (streaming SSE or one JSON)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": model_name, "object": "model", "created": 0, "owned_by": "privinfer-tee"}
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _oai_error(413, "request body too large", "invalid_request_error")
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError
            req = _request_from(body)
        except (ValueError, TypeError):
            return _oai_error(
                400, "body must be a JSON chat completion request", "invalid_request_error"
            )
        except InputError as exc:
            return _oai_error(400, str(exc), "invalid_request_error")
        model = str(body.get("model") or model_name)
        try:
            session = await run_in_threadpool(client.attest)
        except SecurityError as exc:  # evidence rejected: never send the prompt
            return _oai_error(502, f"enclave attestation failed: {exc}", "attestation_error")
        except (TeeServerError, PrivinferError, OSError, httpx.HTTPError) as exc:
            return _oai_error(502, f"TEE server unavailable ({type(exc).__name__})", "server_error")
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        meta = {
            "measurement": session.claims.measurement.hex(),
            "attest_s": round(session.attest_s, 6),
        }
        if body.get("stream"):
            # Wait for the enclave's first answer before the 200 and the role chunk go out: a
            # request the enclave refuses is then a 400, like an unstreamed one.
            res = TeeResult()
            tokens = session.stream(req, res)
            try:
                first = await run_in_threadpool(next, tokens, None)
            except InputError as exc:
                session.close()
                return _oai_error(400, _refusal(exc), "invalid_request_error")
            except (PrivinferError, OSError, httpx.HTTPError) as exc:
                session.close()
                return _oai_error(502, f"TEE stream failed ({type(exc).__name__})", "server_error")
            return StreamingResponse(
                _sse(session, tokens, first, res, cid, created, model, meta),
                media_type="text/event-stream",
            )
        res = TeeResult()
        try:
            await run_in_threadpool(lambda: [None for _ in session.stream(req, res)])
        except InputError as exc:
            return _oai_error(400, _refusal(exc), "invalid_request_error")
        except (PrivinferError, OSError, httpx.HTTPError) as exc:
            return _oai_error(502, f"TEE stream failed ({type(exc).__name__})", "server_error")
        finally:
            session.close()
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": res.text},
                    "finish_reason": _finish(res),
                    "logprobs": None,
                }
            ],
            "usage": _usage(res),
            "privinfer": {**meta, "handshake_s": round(session.handshake_s, 6)},
        }

    return app


def _sse(
    session: Session,
    tokens: Generator[dict[str, Any], None, None],
    first: dict[str, Any] | None,
    res: TeeResult,
    cid: str,
    created: int,
    model: str,
    meta: dict[str, Any],
) -> Iterator[str]:
    """SSE chunks of an answer whose first token message (`first`, None if there is none) the
    handler already received; `tokens` yields the rest and fills `res`."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        obj = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(obj)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for msg in itertools.chain([first] if first is not None else [], tokens):
            if msg.get("text"):
                yield chunk({"content": msg["text"]})
    except (PrivinferError, OSError, httpx.HTTPError) as exc:
        err = {
            "error": {
                "message": f"TEE stream failed ({type(exc).__name__})",
                "type": "server_error",
            }
        }
        yield f"data: {json.dumps(err)}\n\n"
        return
    finally:
        tokens.close()
        session.close()
    yield chunk({}, _finish(res), usage=_usage(res), privinfer=meta)
    yield "data: [DONE]\n\n"


def run_gateway(client: TeeClient, *, model_name: str, host: str, port: int) -> int:
    """`privinfer tee gateway`: attest once up front (fail fast), then serve until interrupted."""
    import uvicorn

    try:
        s = client.attest()
    except (OSError, httpx.HTTPError) as exc:
        raise PrivinferError(
            f"cannot reach the TEE server at {client.url} ({type(exc).__name__})"
        ) from None
    s.close()
    print(claims_summary(s.claims), file=sys.stderr)
    print(
        f"privinfer tee gateway: OpenAI API on http://{host}:{port}/v1 -> {client.url}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(create_gateway_app(client, model_name), host=host, port=port, log_level="warning")
    return 0
