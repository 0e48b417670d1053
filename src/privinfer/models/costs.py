"""Cost accounting shared by every engine: wall/CPU seconds, rounds, bytes, refreshes, per op
class; and the process's peak memory."""

from __future__ import annotations

import json
import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class OpCost:
    """Totals for one op class (as seen by one process or party)."""

    calls: int = 0
    wall_s: float = 0.0
    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    refreshes: int = 0
    cpu_s: float = 0.0  # this process's CPU seconds (all its threads) over the op's spans

    def add(self, other: OpCost) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class CostReport:
    """Totals by op class (e.g. 'linear', 'attention', 'rms_norm'); engines fill what they know."""

    by_op: dict[str, OpCost] = field(default_factory=lambda: defaultdict(OpCost))

    def record(
        self,
        op: str,
        *,
        wall_s: float = 0.0,
        rounds: int = 0,
        bytes_sent: int = 0,
        bytes_received: int = 0,
        refreshes: int = 0,
        cpu_s: float = 0.0,
    ) -> None:
        c = self.by_op[op]
        c.add(OpCost(1, wall_s, rounds, bytes_sent, bytes_received, refreshes, cpu_s))

    @contextmanager
    def timed(self, op: str) -> Iterator[None]:
        """Record the wall and CPU seconds of the block under `op`."""
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.record(op, wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)

    def total(self) -> OpCost:
        t = OpCost()
        for c in self.by_op.values():
            t.add(c)
        return t

    def totals(self) -> dict[str, OpCost]:
        """A copy of the per-op-class totals, holding only the op classes recorded so far."""
        return {k: replace(c) for k, c in self.by_op.items()}

    def reset(self) -> None:
        self.by_op.clear()

    def snapshot(self) -> CostReport:
        r = CostReport()
        for k, c in self.by_op.items():
            r.by_op[k].add(c)
        return r

    def minus(self, earlier: CostReport) -> CostReport:
        r = CostReport()
        for k, c in self.by_op.items():
            e = earlier.by_op.get(k, OpCost())
            r.by_op[k] = OpCost(
                **{f.name: getattr(c, f.name) - getattr(e, f.name) for f in fields(c)}
            )
        return r

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: dict(c.__dict__) for k, c in sorted(self.by_op.items())}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass
class EmbeddingStats:
    """What one embedding call measured: the engine's costs and the mode's own figures."""

    costs: CostReport = field(default_factory=CostReport)
    details: dict[str, Any] = field(default_factory=dict)
