"""The decoding loop over any engine: prefill, incremental decode with the KV cache, streaming."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from privinfer.errors import InputError
from privinfer.models.costs import CostReport
from privinfer.models.ops import Sampler


class Decoder(Protocol):
    """A decoder definition bound to an engine (`Llama`, `GPT2`)."""

    cfg: Any
    ops: Any

    def new_cache(self) -> Any: ...

    def forward(self, ids: Sequence[int], cache: Any, start: int) -> Any: ...


@dataclass
class GenerationStats:
    """Everything measured about one generation, in one place: timings (per-token times exclude
    the prefill step), the engine's costs by op class (`costs`: rounds, bytes, refreshes, wall
    and CPU seconds, as far as the engine knows them) and the mode's own structured figures
    (`details`, e.g. mpc's per-party rounds, he's refresh rounds), filled by the mode that ran."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0
    token_s: list[float] = field(default_factory=list)
    stop_reason: str = ""
    costs: CostReport = field(default_factory=CostReport)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def decode_s(self) -> float:
        return sum(self.token_s)

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_s) / self.decode_s if self.token_s and self.decode_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        med = sorted(self.token_s)[len(self.token_s) // 2] if self.token_s else None
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "prefill_s": round(self.prefill_s, 6),
            "per_token_s_median": round(med, 6) if med is not None else None,
            "per_token_s_mean": round(self.decode_s / len(self.token_s), 6)
            if self.token_s
            else None,
            "tokens_per_s": round(self.tokens_per_s, 3),
            "stop_reason": self.stop_reason,
            "per_token_s": [round(t, 6) for t in self.token_s],
        }
        if self.costs.by_op:
            out["costs"] = self.costs.to_dict()
        out.update(self.details)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def check_budget(n_prompt: int, max_new_tokens: int, max_context: int) -> int:
    """Validate lengths; return how many new tokens fit in the context."""
    if n_prompt == 0:
        raise InputError("the prompt is empty")
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1")
    if n_prompt >= max_context:
        raise InputError(
            f"the prompt has {n_prompt} tokens, more than the model's context of {max_context}"
        )
    return min(max_new_tokens, max_context - n_prompt)


def decode_loop(
    step: Callable[[list[int], int, int], int],
    prompt_ids: Sequence[int],
    *,
    budget: int | None,
    stop_ids: Sequence[int],
    stats: GenerationStats,
    proceed: Callable[[], bool] | None = None,
) -> Iterator[int]:
    """The one decoding loop: `step(ids, position, step_index)` runs the model on `ids` placed at
    `position` and returns the chosen next token; stop at a stop id, after `budget` tokens (None:
    no limit, the step enforces the context), or when `proceed()` (asked before every decode
    step, once the consumer has the previous token) says no. Local engines, enclaves, HE
    servers, MPC parties and remote clients all drive their steps through it."""
    stats.prompt_tokens = len(prompt_ids)
    t0 = time.perf_counter()
    with stats.costs.timed("prefill"):
        tok = step(list(prompt_ids), 0, 0)
    stats.prefill_s = time.perf_counter() - t0
    pos = len(prompt_ids)
    i = 0
    while budget is None or i < budget:
        if tok in stop_ids:
            stats.stop_reason = "eos"
            return
        stats.new_tokens += 1
        yield tok
        if i + 1 == budget:
            break
        if proceed is not None and not proceed():
            stats.stop_reason = "stopped"
            return
        t0 = time.perf_counter()
        with stats.costs.timed("decode"):
            tok = step([tok], pos, i + 1)
        stats.token_s.append(time.perf_counter() - t0)
        pos += 1
        i += 1
    stats.stop_reason = "length"


def threaded_tokens(produce: Callable[[Callable[[int], None]], None]) -> Iterator[int]:
    """Run `produce(emit)` in a daemon thread and yield each token id it emits, as it does:
    for engines whose client answers a session loop (he, tee+he) while the caller streams.
    An exception in `produce` is re-raised here, after the tokens emitted before it."""
    import queue
    import threading

    events: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            produce(lambda tok: events.put(("tok", tok)))
            events.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            events.put(("err", exc))

    threading.Thread(target=run, daemon=True).start()
    while True:
        kind, value = events.get()
        if kind == "err":
            raise value
        if kind == "end":
            return
        yield value


def timed_stream(
    ids: Iterator[int], stats: GenerationStats, *, prompt_tokens: int
) -> Iterator[int]:
    """Time token ids chosen elsewhere (an enclave, MPC parties, an HE session) as they arrive:
    the first one closes the prefill, each later one is a decode step. `stats.costs` gets the
    same spans under "prefill" / "decode" with this (client) process's CPU seconds. Its caller
    sets `stats.stop_reason` when the source ends."""
    stats.prompt_tokens = prompt_tokens
    t0, c0 = time.perf_counter(), time.process_time()
    for tok in ids:
        now, cpu = time.perf_counter(), time.process_time()
        op = "prefill" if stats.new_tokens == 0 else "decode"
        if op == "prefill":
            stats.prefill_s = now - t0
        else:
            stats.token_s.append(now - t0)
        stats.costs.record(op, wall_s=now - t0, cpu_s=cpu - c0)
        t0, c0 = now, cpu
        stats.new_tokens += 1
        yield tok


def generate_ids(
    model: Decoder,
    prompt_ids: Sequence[int],
    *,
    sampler: Sampler,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    stats: GenerationStats,
) -> Iterator[int]:
    """Yield new token ids as they are chosen; fill `stats` as it goes."""
    budget = check_budget(len(prompt_ids), max_new_tokens, model.cfg.max_context)
    cache = model.new_cache()

    def step(ids: list[int], pos: int, i: int) -> int:
        return model.ops.next_token(model.forward(ids, cache, pos), sampler, i)

    return decode_loop(step, prompt_ids, budget=budget, stop_ids=stop_ids, stats=stats)
