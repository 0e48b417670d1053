"""Cost accounting shared by every engine: wall/CPU seconds, rounds, bytes, refreshes, per op
class; and the process's peak memory."""

from __future__ import annotations

import json
import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace


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

    def add(self, other: OpCost) -> None:
        self.calls += other.calls
        self.wall_s += other.wall_s
        self.rounds += other.rounds
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.refreshes += other.refreshes


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
    ) -> None:
        c = self.by_op[op]
        c.calls += 1
        c.wall_s += wall_s
        c.rounds += rounds
        c.bytes_sent += bytes_sent
        c.bytes_received += bytes_received
        c.refreshes += refreshes

    @contextmanager
    def timed(self, op: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.record(op, wall_s=time.perf_counter() - t0)

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
                c.calls - e.calls,
                c.wall_s - e.wall_s,
                c.rounds - e.rounds,
                c.bytes_sent - e.bytes_sent,
                c.bytes_received - e.bytes_received,
                c.refreshes - e.refreshes,
            )
        return r

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: dict(c.__dict__) for k, c in sorted(self.by_op.items())}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
