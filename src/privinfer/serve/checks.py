"""The whole check of a request before any mode runs: JSON body, strict fields, unsupported and
unknown fields by name, the model, roles, stop strings, and the prompt against the context.
Every refusal is an `ApiError` (400) naming the field, never echoing its value."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from privinfer.errors import InputError
from privinfer.models.generate import check_budget
from privinfer.serve import schemas as s
from privinfer.serve.backend import Backend
from privinfer.serve.errors import ApiError, bad_request, from_validation

MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_TOKENS = 128
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


async def read_json(request: Request) -> dict[str, Any]:
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


def parse(cls: type[BaseModel], body: dict[str, Any]) -> Any:
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


def check_model(name: str, model: Any | None, what: str) -> None:
    if model is None or name != model.name:
        served = f"this proxy serves {model.name}" if model is not None else f"no {what} model"
        raise ApiError(
            400, f"the model {name!r} does not exist here: {served}", param="model",
            code="model_not_found",
        )  # fmt: skip


def common(backend: Backend, req: Any) -> dict[str, Any]:
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


def budget(backend: Backend, ids: list[int], max_tokens: int, param: str) -> int:
    try:
        return check_budget(len(ids), max_tokens, backend.lm.cfg.max_context)
    except InputError as exc:
        raise bad_request(str(exc), param, "context_length_exceeded") from None


def chat_ids(backend: Backend, req: s.ChatRequest) -> list[int]:
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


def logprobs_wanted(
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
