"""Continuous batching in the enclave: one scheduler thread runs the pending steps of every
session (decode steps and new prompts' prefills) as one batched forward pass per round; sessions
join and leave between rounds. A round fails or succeeds as a whole.

Security assumption: runs inside the enclave process only. A batch shares the weights and one
step's stacked activations, nothing else: each session keeps its own KV cache (`forward_batch`
attends each row over its own cache only), its own sampler and random generator (it samples in its
own thread from its own logits row), its own token budget and its own records. The one cache that
is shared is the public prefix (`PublicPrefix`): the chat template's default system turn, the same
bytes for everyone, copied into a session's own cache before its first private token.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from privinfer.engines.plain import sample_token
from privinfer.models.generate import GenerationStats, decode_loop

PROBES = ("A", "z", "7")  # user texts whose chat prompts share exactly the public prefix


@dataclass
class _Job:
    """One model step a session hands to the scheduler: a prefill (`ids` from `start`) or one
    decode token (`ids` of length 1); the scheduler fills `logits` (or `error`) and sets `done`."""

    ids: list[int]
    cache: Any
    start: int
    done: threading.Event = field(default_factory=threading.Event)
    logits: Any = None
    error: BaseException | None = None
    compute_s: float = 0.0


class PublicPrefix:
    """The KV cache of the token ids every chat prompt without its own system message starts with
    (the model's default system turn and the user turn's opening), computed once at warm-up.
    Public: it depends on the measured model file only, never on a request."""

    def __init__(self, model: Any, lm: Any) -> None:
        self.ids: list[int] = []
        self.cache: Any = None
        self._ops = model.ops
        try:
            probes = [lm.prompt_ids(p, chat=True) for p in PROBES]
        except Exception:  # a model without a usable chat template: no prefix
            return
        n = 0
        while all(len(p) > n and p[n] == probes[0][n] for p in probes):
            n += 1
        if n >= 2:
            self.ids = probes[0][:n]
            self.cache = model.new_cache()
            model.forward(self.ids, self.cache, 0)

    def match(self, ids: list[int]) -> int:
        """How many leading ids of `ids` the cached prefix covers (0 or all of the prefix); a
        prompt must go beyond the prefix, since its last token's logits are needed."""
        n = len(self.ids)
        return n if n and len(ids) > n and ids[:n] == self.ids else 0

    def session_cache(self) -> Any:
        """A copy of the prefix's cache that one session appends its own rows to."""
        return self._ops.copy_cache(self.cache)


class Batcher:
    """The scheduler: each round runs every pending decode step and the pending prefills (up to
    `prefill_tokens` prompt tokens, at least one prompt) as one `forward_batch`. Before a round it
    waits for the sessions that are decoding to hand in their next step, up to a quarter of the
    last round's time (at least `gather_s`), so a round batches all of them when they keep up
    and a slow reader delays the others by that much at most."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch: int = 64,
        prefill_tokens: int = 512,
        gather_s: float = 0.004,
    ) -> None:
        self.model, self.max_batch, self.gather_s = model, max_batch, gather_s
        self.prefill_tokens = prefill_tokens
        self._cond = threading.Condition()
        self._decodes: list[_Job] = []
        self._prefills: list[_Job] = []
        self._decoding = 0  # sessions between their first decode step and their last token
        self._last_round_s = 0.0
        self.rounds = 0
        self.largest_batch = 0
        threading.Thread(target=self._loop, name="privinfer-batcher", daemon=True).start()

    # the sessions' side
    def run(self, ids: list[int], cache: Any, start: int) -> tuple[Any, float]:
        """Run a step through the scheduler; returns this session's logits row and the compute
        seconds of the round it ran in."""
        job = _Job(ids, cache, start)
        with self._cond:
            (self._decodes if len(ids) == 1 and start > 0 else self._prefills).append(job)
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.logits, job.compute_s

    def joined(self) -> None:
        with self._cond:
            self._decoding += 1

    def left(self) -> None:
        with self._cond:
            self._decoding -= 1
            self._cond.notify_all()

    # the scheduler thread
    def _take(self) -> list[_Job]:
        with self._cond:
            while not self._decodes and not self._prefills:
                self._cond.wait()
            deadline = time.monotonic() + max(self.gather_s, self._last_round_s / 4)
            while len(self._decodes) < min(self._decoding, self.max_batch):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            jobs, self._decodes = self._decodes[: self.max_batch], self._decodes[self.max_batch :]
            budget = self.prefill_tokens
            while self._prefills and len(jobs) < self.max_batch:
                n = len(self._prefills[0].ids)
                if n > budget and budget < self.prefill_tokens:
                    break  # this prompt waits for the next round
                jobs.append(self._prefills.pop(0))
                budget -= n
            return jobs

    def _loop(self) -> None:
        with torch.inference_mode():  # thread-local: the scheduler thread enters it itself
            while True:
                self._step(self._take())

    def _step(self, jobs: list[_Job]) -> None:
        t0 = time.perf_counter()
        try:
            if len(jobs) == 1:
                j = jobs[0]
                rows = [self.model.forward(j.ids, j.cache, j.start)[-1]]
            else:
                rows = list(self.model.forward_batch([(j.ids, j.cache, j.start) for j in jobs]))
            dt = time.perf_counter() - t0
            for j, row in zip(jobs, rows, strict=True):
                j.logits, j.compute_s = row, dt
        except BaseException as exc:  # handed to each waiting session; never logged here
            for j in jobs:
                j.error = exc
        self._last_round_s = time.perf_counter() - t0
        self.rounds += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        for j in jobs:
            j.done.set()


def run_session(
    batcher: Batcher,
    prefix: PublicPrefix,
    lm: Any,
    ids: list[int],
    sampler: Any,
    budget: int,
) -> Iterator[dict[str, Any]]:
    """One request's token and done messages: prefill (from the public prefix's copy when the
    prompt starts with it), then decode steps batched with other sessions' by `batcher`."""
    gen = None
    if not sampler.greedy:
        gen = torch.Generator()
        gen.manual_seed(sampler.seed if sampler.seed is not None else secrets.randbits(62))
    dec = lm.tokenizer.stream_decoder()
    compute_s: list[float] = []  # per step: the (batched) forward pass this step ran in
    queue_s = 0.0
    cached = prefix.match(ids)
    joined = False

    def step(step_ids: list[int], pos: int, i: int) -> int:
        nonlocal queue_s, joined
        if i == 1:  # from its first decode step on, the scheduler waits for this session
            batcher.joined()
            joined = True
        t0 = time.perf_counter()
        if pos == 0 and cached:
            logits, dt = batcher.run(step_ids[cached:], cache, cached)
        else:
            logits, dt = batcher.run(step_ids, cache, pos)
        queue_s += time.perf_counter() - t0 - dt
        compute_s.append(dt)
        return sample_token(logits, sampler, gen)

    stats = GenerationStats()
    with torch.inference_mode():
        cache = prefix.session_cache() if cached else batcher.model.new_cache()
        try:
            for tok in decode_loop(
                step, ids, budget=budget, stop_ids=lm.tokenizer.eos_ids, stats=stats
            ):
                yield {"type": "token", "id": tok, "text": dec.push(tok)}
        finally:
            if joined:
                batcher.left()
    yield {
        "type": "done",
        "prompt_tokens": len(ids),
        "new_tokens": stats.new_tokens,
        "prefill_s": round(compute_s[0], 6),
        "token_s": [round(t, 6) for t in compute_s[1:]],
        "queue_s": round(max(queue_s, 0.0), 6),
        "stop_reason": stats.stop_reason,
    }
