"""Mode options as command-line flags, and the checks every command runs before loading a model.

The flags come from every mode plug-in's `options` (one flag per name, help per mode); the
chosen mode's `check_options` says whether it takes them. Every check here is cheap (no model, no network) and fails with one
sentence that names the flag as typed on the command line.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from privinfer import modes
from privinfer.errors import InputError

# mode options that name a file which must exist before anything starts
PATH_OPTIONS = ("cluster", "root_cert")


# --- the mode plug-ins (privinfer.modes) ---------------------------------------------------
@dataclass(frozen=True)
class ModeOption:
    """One CLI flag for a mode option that several modes may share: the tasks are the union
    over the modes that take it, the help names each mode where their texts differ."""

    name: str
    flag: str
    type: Callable[[str], Any]
    default: Any
    help: str
    tasks: frozenset[str]


def mode_names() -> tuple[str, ...]:
    """Every mode name, in the order `--mode` lists them (no plug-in is imported)."""
    return modes.names()


def all_options() -> list[ModeOption]:
    """One ModeOption per CLI option name over every mode."""
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for mode in modes.names():
        for opt in modes.get(mode).options:
            if opt.cli:
                by_name.setdefault(opt.name, []).append((mode, opt))
    out = []
    for name, pairs in by_name.items():
        first = pairs[0][1]
        texts = {o.help for _, o in pairs}
        help_text = first.help if len(texts) == 1 else "; ".join(f"{m}: {o.help}" for m, o in pairs)
        tasks = frozenset().union(*(o.tasks for _, o in pairs))
        out.append(ModeOption(name, first.flag, first.type, first.default, help_text, tasks))
    return out


def check_mode_options(mode: str, task: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options `mode` runs `task` with (given + defaults); InputError naming the flags."""
    return dict(modes.get(mode).check_options(task, given))


def security_needs_model(mode: str) -> bool:
    """Whether the security report of `mode` needs the loaded model (mpc: op counts)."""
    return bool(modes.get(mode).security_needs_model)


def modes_taking(name: str, task: str) -> list[str]:
    """The modes that take option `name` for `task` on the command line."""
    return [
        m
        for m in modes.names()
        if any(o.name == name and o.cli for o in modes.get(m).options_for(task))
    ]


# --- flags ------------------------------------------------------------------------------------
def add_mode_arguments(p: argparse.ArgumentParser, task: str) -> None:
    """--mode and one flag per mode option that some mode takes for `task`."""
    names = mode_names()
    p.add_argument(
        "--mode", default="plain", choices=names, help=f"how the model runs: {', '.join(names)}"
    )
    for opt in all_options():
        if task not in opt.tasks:
            continue
        where = "mode " + ", ".join(modes_taking(opt.name, task))
        if opt.type is bool:
            shown = "" if "default" in opt.help else "; default: off"
            help_text = f"{opt.help} ({where}{shown})"
            p.add_argument(opt.flag, dest=opt.name, action="store_true", help=help_text)
            continue
        shown = "" if "default" in opt.help else f"; default: {opt.default}"
        p.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.flag.lstrip("-").upper().replace("-", "_"),
            help=f"{opt.help} ({where}{shown})",
        )


def given_mode_options(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """The mode options the user typed (flags left out are not in the dict), converted."""
    given: dict[str, Any] = {}
    for opt in all_options():
        if task not in opt.tasks:
            continue
        value = getattr(args, opt.name, None)
        if value is None or value is False:
            continue
        if opt.type is not bool and opt.type is not str:
            try:
                value = opt.type(value)
            except (TypeError, ValueError):
                raise InputError(
                    f"{opt.flag} {value!r} is not a valid {opt.type.__name__}"
                ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{opt.flag} must be a finite number, not {value}")
        given[opt.name] = value
    return given


def mode_options(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """The chosen mode's options for `task`: the flags given, checked by the mode, then the
    files they name checked to exist."""
    opts = check_mode_options(args.mode, task, given_mode_options(args, task))
    flags = {o.name: o.flag for o in all_options()}
    for name in PATH_OPTIONS:
        value = opts.get(name)
        if value is not None and not os.path.exists(str(value)):
            raise InputError(f"{flags.get(name, name)} {value}: no such file")
    return opts


# --- values -----------------------------------------------------------------------------------
def check_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise InputError("--threads must be at least 1")


def check_positive(flag: str, value: int) -> None:
    if value < 1:
        raise InputError(f"{flag} must be at least 1 (got {value})")


def check_text(text: str, what: str) -> None:
    if not text.strip():
        raise InputError(f"{what} is empty")


def check_model(name: str) -> None:
    """The model name or path resolves to a file (unknown names and missing files fail here)."""
    from privinfer.models.registry import resolve

    resolve(name)
