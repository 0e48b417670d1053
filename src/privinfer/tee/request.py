"""The enclave's check of a decrypted generation request: every field's type, finiteness and
range, before anything runs. A refusal is an InputError naming the field; the enclave sends it
back as a `bad_request` record (the request came from a client the host cannot vouch for)."""

from __future__ import annotations

import math
from typing import Any

from privinfer.errors import InputError
from privinfer.models.generate import check_budget
from privinfer.models.ops import Sampler
from privinfer.tee.protocol import SEED_MAX


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _show(v: Any) -> str:
    """A refused value for an error message: numbers in short, anything else by its type only."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        text = repr(v)
        return text if len(text) <= 24 else f"a {len(str(abs(int(v))))}-digit number"
    return f"a JSON {type(v).__name__}" if v is not None else "null"


def _number(req: dict[str, Any], name: str, default: float) -> float:
    v = req.get(name, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{name} must be a number (got {_show(v)})")
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise InputError(f"{name} must be a finite number (got {_show(v)})")
    return x


def parse_request(
    req: dict[str, Any], lm: Any, max_new_tokens_cap: int
) -> tuple[list[int], Sampler, int]:
    """(prompt ids, sampler, token budget) of `req` for the loaded decoder `lm`."""
    chat = req.get("chat", True)
    if not isinstance(chat, bool):
        raise InputError("chat must be true or false")
    if "prompt_ids" in req:
        ids = req["prompt_ids"]
        vocab = lm.cfg.vocab_size
        if not isinstance(ids, list) or not all(_is_int(t) and 0 <= t < vocab for t in ids):
            raise InputError(f"prompt_ids must be a list of token ids in 0..{vocab - 1}")
    elif "messages" in req:
        msgs = req["messages"]
        if not isinstance(msgs, list) or not all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in msgs
        ):
            raise InputError("messages must be a list of {role, content} text pairs")
        ids = lm.prompt_ids([dict(role=m["role"], content=m["content"]) for m in msgs], chat=chat)
    elif isinstance(req.get("prompt"), str):
        ids = lm.prompt_ids(req["prompt"], chat=chat)
    else:
        raise InputError("the request needs a text prompt, messages or prompt_ids")
    temperature = _number(req, "temperature", 0.0)
    top_p = _number(req, "top_p", 1.0)
    if temperature < 0:
        raise InputError(f"temperature must be a finite number >= 0 (got {temperature})")
    if not 0 < top_p <= 1:
        raise InputError(f"top_p must be a number in (0, 1] (got {top_p})")
    seed = req.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= SEED_MAX):
        raise InputError(f"seed must be an integer between 0 and 2**63-1 (got {_show(seed)})")
    want = req.get("max_new_tokens", 128)
    if not (_is_int(want) and 1 <= want <= SEED_MAX):
        raise InputError(
            f"max_new_tokens must be an integer between 1 and 2**63-1 (got {_show(want)})"
        )
    sampler = Sampler(temperature, top_p, seed)
    want = min(want, max_new_tokens_cap)
    return ids, sampler, check_budget(len(ids), want, lm.cfg.max_context)
