"""Registry of deployment modes beyond plain (tee, mpc, he): each plugs in a generation and an
embedding runner. A mode that is not built in yet is refused with a clear error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from privinfer.errors import InputError

KNOWN_MODES = ("plain", "tee", "mpc", "he")
_GENERATORS: dict[str, Callable[..., Iterator[int]]] = {}
_EMBEDDERS: dict[str, Callable[..., Any]] = {}


def register(
    mode: str,
    *,
    generate: Callable[..., Iterator[int]] | None = None,
    embed: Callable[..., Any] | None = None,
) -> None:
    if generate is not None:
        _GENERATORS[mode] = generate
    if embed is not None:
        _EMBEDDERS[mode] = embed


def _lookup(table: dict[str, Callable[..., Any]], mode: str, what: str) -> Callable[..., Any]:
    if mode not in KNOWN_MODES:
        raise InputError(f"unknown mode {mode!r}: use one of {', '.join(KNOWN_MODES)}")
    _load_builtin(mode)
    fn = table.get(mode)
    if fn is None:
        raise InputError(f"mode {mode!r} does not support {what} in this version of privinfer")
    return fn


def _load_builtin(mode: str) -> None:
    import importlib

    try:
        importlib.import_module(f"privinfer.modes_{mode}")
    except ModuleNotFoundError as exc:
        if exc.name != f"privinfer.modes_{mode}":
            raise


def run_generation(mode: str, model: Any, prompt_ids: list[int], **kwargs: Any) -> Iterator[int]:
    return _lookup(_GENERATORS, mode, "generation")(model, prompt_ids, **kwargs)


def run_embedding(mode: str, model: Any, ids: list[list[int]], **kwargs: Any) -> Any:
    return _lookup(_EMBEDDERS, mode, "embedding")(model, ids, **kwargs)
