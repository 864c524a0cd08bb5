"""Per-stage observability: counts, throughput, queue depth and latency, live and at the end.

Technique: seed 001's log layer and Storm's per-bolt metrics. Every stage owns one
:class:`StageStats` that only its own thread writes, so counting needs no lock; readers (a
progress callback, the end-of-run summary) see values at most one chunk old, which is all a
dashboard needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["StageStats", "format_summary"]


@dataclass
class StageStats:
    """What one stage has done so far.

    Attributes:
        name: the stage's name (shard copies get ``name[i]``).
        kind: how its function runs (``thread``, ``process``, ``async``, ``executor``, ``source``...).
        records_in / records_out: records received and emitted.
        errors: records whose function raised (after retries), whatever the policy did with them.
        late: records an event-time window received after their windows were purged (they
            went to its side output).
        busy_seconds: time spent inside the stage's own work (waiting on its neighbours excluded).
        queue_depth: records waiting in the stage's inbound channel right now.
    """

    name: str
    kind: str
    records_in: int = 0
    records_out: int = 0
    errors: int = 0
    late: int = 0
    busy_seconds: float = 0.0
    queue_depth: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def throughput(self) -> float:
        """Records emitted per second of wall-clock time since the stage started."""
        return self.records_out / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def latency(self) -> float:
        """Mean busy seconds per input record (for a parallel stage: per record per slot)."""
        return self.busy_seconds / self.records_in if self.records_in else 0.0


def format_summary(stats: list[StageStats]) -> str:
    """A small fixed-width table of every stage, for printing at the end of a run."""
    lines = [f"{'stage':<28} {'kind':<9} {'in':>9} {'out':>9} {'err':>5} {'rec/s':>10} {'µs/rec':>9}"]
    for s in stats:
        lines.append(
            f"{s.name[:28]:<28} {s.kind:<9} {s.records_in:>9} {s.records_out:>9} "
            f"{s.errors:>5} {s.throughput:>10.0f} {s.latency * 1e6:>9.1f}"
        )
    return "\n".join(lines)
