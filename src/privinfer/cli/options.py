"""Mode options as command-line flags, and the checks every command runs before loading a model.

The flags come from `privinfer.modes.all_options()`; the chosen mode's `check_options` says
whether it takes them. Every check here is cheap (no model, no network) and fails with one
sentence that names the flag as typed on the command line.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from privinfer.errors import InputError

SEED_MAX = 2**63 - 1
# mode options that name a file which must exist before anything starts
PATH_OPTIONS = ("cluster", "root")


# --- the mode plug-in API (privinfer.modes); call sites stay behind these functions ---------
@dataclass(frozen=True)
class _Option:
    """Stand-in for modes.Option until privinfer.modes provides it."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    tasks: frozenset[str]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


_GEN, _BOTH = frozenset({"generate"}), frozenset({"generate", "embed"})
_FALLBACK: dict[str, tuple[_Option, ...]] = {
    "plain": (),
    "tee": (
        _Option("server", str, None, "address of a running private server", _GEN),
        _Option("root", str, None, "PEM of the pinned platform root", _GEN),
        _Option("measurement", str, None, "expected enclave measurement (hex)", _GEN),
    ),
    "mpc": (_Option("cluster", str, None, "cluster file of running MPC parties", _BOTH),),
    "he": (
        _Option("server", str, None, "address of a running private server", _BOTH),
        _Option(
            "in_process", bool, False, "run the HE server in this process", frozenset({"embed"})
        ),
    ),
}


def mode_names() -> tuple[str, ...]:
    """Every mode name, in the order `--mode` lists them."""
    from privinfer import modes

    if hasattr(modes, "names"):
        return tuple(modes.names())
    return tuple(modes.KNOWN_MODES)


def all_options() -> list[Any]:
    """One Option per name over every mode (name, type, default, help, tasks, flag)."""
    from privinfer import modes

    if hasattr(modes, "all_options"):
        return list(modes.all_options())
    seen: dict[str, _Option] = {}
    for opts in _FALLBACK.values():
        for o in opts:
            if o.name in seen:
                seen[o.name] = _Option(
                    o.name, o.type, o.default, seen[o.name].help, seen[o.name].tasks | o.tasks
                )
            else:
                seen[o.name] = o
    return list(seen.values())


def check_mode_options(mode: str, task: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options `mode` runs `task` with (given + defaults); InputError naming the flags."""
    from privinfer import modes

    if hasattr(modes, "get"):
        return dict(modes.get(mode).check_options(task, given))
    if mode not in _FALLBACK:
        raise InputError(f"unknown mode {mode!r}: use one of {', '.join(_FALLBACK)}")
    takes = [o for o in _FALLBACK[mode] if task in o.tasks]
    names = {o.name for o in takes}
    for name in given:
        if name not in names:
            flag = "--" + name.replace("_", "-")
            also = f" (it takes {', '.join(o.flag for o in takes)})" if takes else ""
            raise InputError(f"mode {mode} does not take {flag}{also}")
    return {**{o.name: o.default for o in takes}, **given}


def security_needs_model(mode: str) -> bool:
    """Whether the security report of `mode` needs the loaded model (mpc: op counts)."""
    from privinfer import modes

    if hasattr(modes, "get"):
        return bool(modes.get(mode).security_needs_model)
    return mode == "mpc"


def modes_taking(name: str, task: str) -> list[str]:
    """The modes that take option `name` for `task`."""
    from privinfer import modes

    out = []
    for mode in mode_names():
        opts = modes.get(mode).options if hasattr(modes, "get") else _FALLBACK[mode]
        if any(o.name == name and task in o.tasks for o in opts):
            out.append(mode)
    return out


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
        where = f"mode {', '.join(modes_taking(opt.name, task))}"
        if opt.type is bool:
            help_text = f"{opt.help} ({where}; default: off)"
            p.add_argument(opt.flag, dest=opt.name, action="store_true", help=help_text)
            continue
        default = "none" if opt.default is None else opt.default
        p.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.name.upper(),
            help=f"{opt.help} ({where}; default: {default})",
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
    for name in PATH_OPTIONS:
        value = opts.get(name)
        if value is not None and not os.path.exists(str(value)):
            raise InputError(f"--{name.replace('_', '-')} {value}: no such file")
    return opts


# --- values -----------------------------------------------------------------------------------
def check_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise InputError("--threads must be at least 1")


def check_positive(flag: str, value: int) -> None:
    if value < 1:
        raise InputError(f"{flag} must be at least 1 (got {value})")


def check_sampling(temperature: float, top_p: float, seed: int | None) -> None:
    """--temperature finite and >= 0, --top-p in (0, 1], --seed in 0..2**63-1."""
    if not math.isfinite(temperature) or temperature < 0:
        raise InputError(f"--temperature must be a finite number >= 0 (got {temperature})")
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise InputError(f"--top-p must be a number in (0, 1] (got {top_p})")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise InputError(f"--seed must be between 0 and 2**63-1 = {SEED_MAX} (got {seed})")


def check_text(text: str, what: str) -> None:
    if not text.strip():
        raise InputError(f"{what} is empty")


def check_model(name: str) -> None:
    """The model name or path resolves to a file (unknown names and missing files fail here)."""
    from privinfer.models.registry import resolve

    resolve(name)
