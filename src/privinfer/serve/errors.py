"""OpenAI-shaped errors: one sentence naming the field, never echoing what the user sent."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from privinfer.errors import InputError


class ApiError(Exception):
    """An error the proxy answers with `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        etype: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.etype = (
            status,
            message,
            param,
            code,
            etype,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.etype,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "union", "str", "list", "int", "float")):
            out += ("." if out else "") + str(part)
    return out or "body"


def from_validation(exc: ValidationError) -> ApiError:
    """The first error of a pydantic validation as a 400 naming its field (input never shown)."""
    err = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    param = _param(tuple(err["loc"]))
    msg = str(err["msg"]).rstrip(".")
    msg = msg.removeprefix("Value error, ")
    if err["type"] == "missing":
        return bad_request(f"{param} is required", param, "missing_required_parameter")
    return bad_request(f"{param} is invalid: {msg[:1].lower()}{msg[1:]}", param, "invalid_value")


# the CLI flags a mode plug-in names in its refusals, and the request fields they are
FLAG_FIELDS = {
    "--top-p": "top_p",
    "--seed": "seed",
    "--temperature": "temperature",
    "--max-tokens": "max_tokens",
}


def from_mode(exc: InputError) -> ApiError:
    """A mode plug-in's refusal (its sentence names CLI flags) as a 400 naming the field."""
    text = str(exc)
    param = next((f for flag, f in FLAG_FIELDS.items() if flag in text), None)
    for flag, f in FLAG_FIELDS.items():
        text = text.replace(flag, f)
    return bad_request(text, param, "unsupported_by_mode")
