"""What the proxy serves: the models, the chosen mode plug-in with its checked options, the
services the plug-in starts once (a local enclave, three local parties), and one worker thread
that runs every mode call in turn.

One long-lived worker thread runs the plug-ins: the engines' state (a sampler's generator, an
MPC party link) is touched by one thread at a time, and any child a per-call plug-in spawns has
a parent thread that outlives it (`net.lifetime`'s caveat). Requests queue in arrival order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from privinfer import modes
from privinfer.errors import InputError


@dataclass
class Backend:
    """A mode plug-in bound to loaded models and the options that reach its services."""

    mode: modes.Mode
    lm: Any | None  # the decoder (LanguageModel), None when the proxy serves embeddings only
    em: Any | None  # the encoder (EmbeddingModel), None when the mode does not embed
    gen_options: dict[str, Any]
    embed_options: dict[str, Any]
    info: dict[str, Any]
    started: int = field(default_factory=lambda: int(time.time()))
    worker: Worker | None = None

    @property
    def fingerprint(self) -> str:
        """tee: the verified enclave measurement; other modes: a digest of their parameters."""
        if self.info.get("measurement"):
            return str(self.info["measurement"])
        blob = json.dumps(
            {"mode": self.mode.name, "info": self.info, "models": self.model_ids()},
            sort_keys=True,
            default=str,
        )
        return "fp_" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def model_ids(self) -> list[str]:
        return [m.name for m in (self.lm, self.em) if m is not None]


class Worker:
    """One thread that runs submitted jobs in order, for the proxy's whole life."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, name="privinfer-serve-worker", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)


def _load(name: str, threads: int | None) -> Any:
    import privinfer

    return privinfer.load(name, threads=threads)


@contextlib.contextmanager
def open_backend(
    mode_name: str,
    *,
    model: str | None,
    embed_model: str | None,
    options: dict[str, Any],
    threads: int | None = 1,
    loaded: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> Iterator[Backend]:
    """Load the models, start the plug-in's services once, attest or describe the mode; stop
    everything on exit. `loaded` maps names to models already in memory (tests)."""
    mode = modes.get(mode_name)
    loaded = loaded or {}
    gen_given = {
        k: v for k, v in options.items() if any(o.name == k for o in mode.options_for("generate"))
    }
    emb_given = {
        k: v for k, v in options.items() if any(o.name == k for o in mode.options_for("embed"))
    }
    stray = set(options) - set(gen_given) - set(emb_given)
    if stray:
        mode.check_options("generate", {k: options[k] for k in stray})  # raises naming the flag
    lm = em = None
    if model and "generate" in mode.tasks:
        lm = loaded.get(model) or _load(model, threads)
        if lm.family.task != "generate":
            raise InputError(f"{model} is an encoder; pass it as --embed-model")
    if embed_model and "embed" in mode.tasks:
        em = loaded.get(embed_model) or _load(embed_model, threads)
        if em.family.task != "embed":
            raise InputError(f"{embed_model} is a decoder; pass it as --model")
    if lm is None and em is None:
        raise InputError(f"mode {mode_name} has nothing to serve with these models")
    gen_opts = mode.check_options("generate", gen_given) if lm is not None else {}
    emb_opts = mode.check_options("embed", emb_given) if em is not None else {}
    with contextlib.ExitStack() as stack:
        if lm is not None:
            log(f"starting mode {mode_name}'s services for {lm.name}")
            gen_opts = stack.enter_context(mode.services(lm, **gen_opts))
        if em is not None:
            emb_opts = stack.enter_context(mode.services(em, **emb_opts))
        info = mode.info(lm or em, **(gen_opts if lm is not None else emb_opts))
        worker = Worker()
        stack.callback(worker.stop)
        yield Backend(mode, lm, em, gen_opts, emb_opts, info, worker=worker)
