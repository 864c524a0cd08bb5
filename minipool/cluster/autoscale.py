"""The autoscaling policy: when to add workers and which idle ones to retire.

Technique (seed 000 §2.1's automatic expansion of a compute pool): a pool grows when work
waits and shrinks when workers sit idle, within a floor and a ceiling. The two signals are the
ones Kubernetes' and Celery's autoscalers use: *queueing delay* (the oldest queued task has
waited longer than ``scale_up_after`` although no slot is free) and *idleness* (a worker has
had nothing to do for ``idle_timeout``). A ``cooldown`` after every action stops the policy from
flapping, and gives a new worker time to start and take work before its absence is counted
again.

Why sans-I/O: ``decide`` only looks at numbers and returns a ``Decision``; the pool starts and
stops the processes. The policy is therefore a pure function of its inputs and the clock, and
tests drive it with a fake clock, with no process to wait for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WorkerLoad", "Decision", "Autoscaler"]


@dataclass(frozen=True)
class WorkerLoad:
    """One worker as the autoscaler sees it.

    ``idle_since`` is the clock reading when it last became idle, or ``None`` while it is busy.
    """

    id: str
    slots: int
    inflight: int
    idle_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """What to do now: start ``add`` workers and stop those in ``remove``, and why."""

    add: int = 0
    remove: list[str] = field(default_factory=list)
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


class Autoscaler:
    """Decides how many workers a pool should add or retire.

    Args:
        min_workers: never fewer (missing ones are added at once, cooldown or not).
        max_workers: never more.
        scale_up_after: seconds the oldest queued task may wait before the pool grows.
        idle_timeout: seconds a worker may sit idle before it is retired.
        cooldown: seconds between two scaling actions.
        clock: returns the current time in seconds; inject a fake one in tests.
        max_events: how many past actions ``events`` keeps.

    Raises:
        ValueError: the bounds are inconsistent or a duration is negative.
    """

    def __init__(
        self,
        min_workers: int,
        max_workers: int,
        *,
        scale_up_after: float = 0.5,
        idle_timeout: float = 5.0,
        cooldown: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_events: int = 100,
    ) -> None:
        if not 0 <= min_workers <= max_workers or max_workers < 1:
            raise ValueError(
                f"need 0 <= min_workers <= max_workers and max_workers >= 1, got {min_workers}, {max_workers}"
            )
        if min(scale_up_after, idle_timeout, cooldown) < 0:
            raise ValueError("scale_up_after, idle_timeout and cooldown must not be negative")
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.scale_up_after = scale_up_after
        self.idle_timeout = idle_timeout
        self.cooldown = cooldown
        self._clock = clock
        self._max_events = max_events
        self._last_action: float | None = None
        self.events: list[dict[str, Any]] = []

    def decide(self, queued: int, oldest_wait: float, workers: Sequence[WorkerLoad]) -> Decision:
        """Look at the queue and the workers; say what to change now.

        Args:
            queued: tasks waiting for a worker.
            oldest_wait: seconds the oldest of them has waited (0 when none wait).
            workers: every live worker (include ones still starting, or rely on the cooldown).
        """
        now = self._clock()
        count = len(workers)
        if count < self.min_workers:
            below = f"{count} workers, below the minimum of {self.min_workers}"
            return self._act(now, Decision(add=self.min_workers - count, reason=below), queued, count)
        if count > self.max_workers:
            extra = [w.id for w in self._idle_longest_first(workers, now, 0.0)]
            if extra[: count - self.max_workers]:
                above = f"{count} workers, above the maximum of {self.max_workers}"
                return self._act(
                    now, Decision(remove=extra[: count - self.max_workers], reason=above), queued, count
                )
        if self._last_action is not None and now - self._last_action < self.cooldown:
            return Decision(reason="cooling down")
        grow = self._grow(queued, oldest_wait, workers)
        if grow:
            return self._act(now, grow, queued, count)
        shrink = self._shrink(queued, workers, now)
        if shrink:
            return self._act(now, shrink, queued, count)
        return Decision(reason="steady")

    def _grow(self, queued: int, oldest_wait: float, workers: Sequence[WorkerLoad]) -> Decision:
        if queued <= 0 or oldest_wait < self.scale_up_after or len(workers) >= self.max_workers:
            return Decision()
        spare = sum(max(w.slots - w.inflight, 0) for w in workers)
        if spare >= queued:
            return Decision()  # free slots will take them: the wait is not for lack of workers
        # Enough workers for the tasks no free slot can take, sized like the current ones.
        per_worker = max(1, round(sum(w.slots for w in workers) / len(workers))) if workers else 1
        add = min(math.ceil((queued - spare) / per_worker), self.max_workers - len(workers))
        return Decision(
            add=add, reason=f"{queued} tasks queued, the oldest for {oldest_wait:.2f}s, {spare} free slots"
        )

    def _shrink(self, queued: int, workers: Sequence[WorkerLoad], now: float) -> Decision:
        if queued > 0 or len(workers) <= self.min_workers:
            return Decision()
        idle = self._idle_longest_first(workers, now, self.idle_timeout)
        remove = [w.id for w in idle[: len(workers) - self.min_workers]]
        if not remove:
            return Decision()
        return Decision(
            remove=remove, reason=f"{len(remove)} workers idle for more than {self.idle_timeout:g}s"
        )

    @staticmethod
    def _idle_longest_first(workers: Sequence[WorkerLoad], now: float, at_least: float) -> list[WorkerLoad]:
        idle = [
            w
            for w in workers
            if w.inflight == 0 and w.idle_since is not None and now - w.idle_since >= at_least
        ]
        return sorted(idle, key=lambda w: w.idle_since or 0.0)  # never None here: filtered above

    def _act(self, now: float, decision: Decision, queued: int, count: int) -> Decision:
        self._last_action = now
        self.events.append(
            {
                "time": now,
                "action": "add" if decision.add else "remove",
                "add": decision.add,
                "remove": list(decision.remove),
                "workers_before": count,
                "queued": queued,
                "reason": decision.reason,
            }
        )
        del self.events[: -self._max_events]
        return decision
