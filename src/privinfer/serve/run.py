"""Mode calls on the backend's worker thread, seen from the event loop as an async iterator;
and a mode's failure as an API error."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from privinfer.errors import InputError, PrivinferError, SecurityError
from privinfer.models.ops import Sampler
from privinfer.modes import SEED_MAX
from privinfer.serve.backend import Backend
from privinfer.serve.errors import ApiError, from_mode
from privinfer.serve.stream import Finish, Piece, run_choice

log = logging.getLogger("privinfer.serve")


_END = object()


async def events(backend: Backend, make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
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


def mode_error(backend: Backend, exc: BaseException) -> ApiError:
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


def choices(backend: Backend, ids: list[int], p: dict[str, Any], budget: int, top: int | None):
    def make() -> Iterator[Piece | Finish]:
        for c in range(p["n"]):
            seed = p["seed"] if p["seed"] is None else (p["seed"] + c) % (SEED_MAX + 1)
            sampler = Sampler(temperature=p["temperature"], top_p=p["top_p"], seed=seed)
            yield from run_choice(
                backend.mode, backend.lm, backend.gen_options, ids, choice=c, sampler=sampler,
                max_new_tokens=budget, stops=p["stops"], top_logprobs=top,
            )  # fmt: skip

    return make
