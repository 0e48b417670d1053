"""Deployment modes as plug-ins: one file per mode in this package plus one line in `REGISTRY`.

A mode says who runs which engine where and who learns what. The CLI's flags, `privinfer
security --mode`, the threat matrix and `privinfer bench --mode` all read the `Mode` objects
here, so adding a mode touches its own file and the registry line only (docs/architecture.md,
"Adding a mode").

Plug-ins import their engines (and torch) inside the methods that run them, so reading the
options, which the CLI does to build its flags and refuse bad arguments, imports no engine.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from privinfer.errors import InputError

if TYPE_CHECKING:  # the CLI reads options and refuses bad ones before torch is imported
    from privinfer.models.costs import EmbeddingStats
    from privinfer.models.generate import GenerationStats
    from privinfer.models.ops import Sampler

# name -> module that defines `MODE`; the order is the order users see.
REGISTRY: dict[str, str] = {
    "plain": "privinfer.modes.plain",
    "tee": "privinfer.modes.tee",
    "mpc": "privinfer.modes.mpc",
    "he": "privinfer.modes.he",
    "tee+he": "privinfer.modes.tee_he",
    "mpc+he": "privinfer.modes.mpc_he",
}

TASKS = frozenset({"generate", "embed"})
GENERATION_SETTINGS = "chat, max_new_tokens, temperature, top_p and seed"
SEED_MAX = 2**63 - 1


def check_sampling(temperature: float, top_p: float, seed: int | None) -> None:
    """--temperature finite and >= 0, --top-p in (0, 1], --seed in 0..2**63-1 (every mode's
    sampler takes these; the CLI and the Python API both check here, before anything runs)."""
    if not math.isfinite(temperature) or temperature < 0:
        raise InputError(f"--temperature must be a finite number >= 0 (got {temperature})")
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise InputError(f"--top-p must be a number in (0, 1] (got {top_p})")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise InputError(f"--seed must be between 0 and 2**63-1 = {SEED_MAX} (got {seed})")


class OptionError(InputError):
    """A mode option that the chosen mode does not take, or a value it cannot use."""


@dataclass(frozen=True)
class Option:
    """One mode option: its keyword name, CLI parser, default and help.

    `type` parses the CLI string (`bool` means a flag without a value). `tasks` says whether
    the option applies to generation, embedding or both. `cli=False` keeps an option to the
    Python API (a progress callback); `cli_flag` names its flag when it differs from the name;
    `positive` refuses a number that is not greater than 0 (timeouts, sizes).
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    tasks: frozenset[str] = TASKS
    cli: bool = True
    cli_flag: str | None = None
    positive: bool = False

    @property
    def flag(self) -> str:
        return self.cli_flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Request:
    """What to generate, checked by the caller: prompt ids, sampler and the new-token budget."""

    prompt_ids: list[int]
    sampler: Sampler
    max_new_tokens: int


def _flags(options: Sequence[Option]) -> str:
    return ", ".join(o.flag for o in options) or "no options"


class Mode:
    """A deployment mode. Subclasses set the class attributes and implement what they support.

    - `generate(model, req, stats, **options)` yields token ids for a `Request` and fills
      `stats` (timings, the engine's costs in `stats.costs`, the mode's figures in
      `stats.details`).
    - `embed(model, ids_list, stats, **options)` returns a [n, dim] tensor and fills `stats`
      (an `EmbeddingStats`: costs and details).
    - `security(model, **params)` returns the parameters section of `privinfer security`, every
      figure derived from the parameters in use.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset()
    options: ClassVar[tuple[Option, ...]] = ()
    leakage: ClassVar[tuple[str, ...]] = ()
    threat: ClassVar[dict[str, dict[str, Any]]] = {}  # adversary -> asset -> security.matrix.Cell
    security_needs_model: ClassVar[bool] = False
    bench_workloads: ClassVar[tuple[str, ...]] = ()  # `privinfer bench` workloads it runs in
    reveals_logits: ClassVar[bool] = False  # whether the client may see logits (logprobs)

    def options_for(self, task: str) -> tuple[Option, ...]:
        return tuple(o for o in self.options if task in o.tasks)

    def check_options(self, task: str, given: dict[str, Any]) -> dict[str, Any]:
        """Refuse options this mode does not take for `task` (by their CLI flags); fill defaults."""
        if task not in self.tasks:
            what = "text generation" if task == "generate" else "embeddings"
            raise OptionError(f"mode {self.name} does not support {what}")
        known = {o.name: o for o in self.options_for(task)}
        unknown = sorted(k for k in given if k not in known)
        takes = f"mode {self.name} takes {_flags([o for o in known.values() if o.cli])}"
        flags = {o.name: o.flag for m in REGISTRY for o in get(m).options}
        stray = [k for k in unknown if k not in flags]
        if stray:
            settings = GENERATION_SETTINGS if task == "generate" else "texts"
            raise OptionError(
                f"unknown option {', '.join(map(repr, stray))}: {takes}; "
                f"the {task} call itself takes {settings}"
            )
        if unknown:
            names = ", ".join(flags[k] for k in unknown)
            raise OptionError(f"mode {self.name} does not take {names} ({takes})")
        out = {o.name: o.default for o in known.values()}
        for k, v in given.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise OptionError(f"{known[k].flag} must be a finite number")
            if known[k].positive and v is not None and not v > 0:
                raise OptionError(f"{known[k].flag} must be greater than 0 (got {v})")
            out[k] = v
        return out

    def generate(
        self, model: Any, req: Request, stats: GenerationStats, **options: Any
    ) -> Iterator[int]:
        raise OptionError(f"mode {self.name} does not support text generation")

    def embed(
        self, model: Any, ids_list: list[list[int]], stats: EmbeddingStats, **options: Any
    ) -> Any:
        raise OptionError(f"mode {self.name} does not support embeddings")

    def security(self, model: Any | None, **params: Any) -> dict[str, Any]:
        return {"summary": self.summary}

    def info(self, model: Any | None, **options: Any) -> dict[str, Any]:
        """What protects this mode's user, for a client to show (`privinfer serve`'s page):
        JSON-able, derived from the parameters and services in use (`options` as checked)."""
        return {"summary": self.summary}

    @contextlib.contextmanager
    def services(self, model: Any, **options: Any) -> Iterator[dict[str, Any]]:
        """Start once the local services a long-lived client needs (a local enclave, three
        local parties) and yield the options that reach them; stop them on exit. Default: none."""
        yield options


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Mode:
    """The mode called `name`; an unknown name is refused with the list of known ones."""
    if name not in REGISTRY:
        raise InputError(f"unknown mode {name!r}: use one of {', '.join(REGISTRY)}")
    mode = importlib.import_module(REGISTRY[name]).MODE
    assert isinstance(mode, Mode) and mode.name == name, REGISTRY[name]
    return mode
