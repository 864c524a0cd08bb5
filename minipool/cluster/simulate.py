"""A discrete-event simulation of task dispatch, to compare balancing policies on paper.

Technique: discrete-event simulation. Instead of running processes and waiting for real
seconds, the simulation keeps a priority queue of future events (a task finishes at t=3.2) and
jumps from one to the next, so a thousand tasks on four workers take milliseconds to "run",
and the same inputs always give the same answer. This is how the policies of ``balance`` are
compared fairly: same tasks, same workers, only the policy changes.

The model is minipool's: a client submits tasks, keeping at most ``window`` of them
unfinished (as ``Pool.map`` does when it buffers); the coordinator leases each queued task to a
worker chosen by the policy among those holding fewer than ``slots * prefetch`` leases (Celery's
prefetch multiplier: a worker may hold tasks it has not started yet, so its processes never
wait on the network); a worker runs ``slots`` tasks at once, each taking ``size / speed``
seconds, and starts queued ones in order. As the real coordinator does, the simulation measures
each worker's run time and pull time (dispatch to start) with an ``Ewma``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .balance import Ewma, Policy

__all__ = ["WorkerSpec", "SimResult", "simulate"]


@dataclass(frozen=True)
class WorkerSpec:
    """A simulated worker: its id, how many tasks it runs at once, and its relative speed."""

    id: str
    slots: int = 1
    speed: float = 1.0


@dataclass
class SimResult:
    """The outcome of one simulated batch."""

    policy: str
    makespan: float  # from the first submission to the last result
    tasks_per_worker: dict[str, int]
    mean_turnaround: float  # mean seconds from submission to result


@dataclass
class _SimWorker:
    """A worker's state as the coordinator sees it; satisfies ``balance.Candidate``."""

    id: str
    slots: int
    speed: float
    inflight: int = 0
    running: int = 0
    done: int = 0
    backlog: deque = field(default_factory=deque)  # leased, not started: (task, dispatched_at)
    run: Ewma = field(default_factory=Ewma)
    pull: Ewma = field(default_factory=Ewma)

    @property
    def avg_run(self) -> float | None:
        return self.run.value

    @property
    def avg_pull(self) -> float | None:
        return self.pull.value


def simulate(
    policy: Policy,
    workers: Sequence[WorkerSpec],
    sizes: Sequence[float],
    *,
    prefetch: int = 1,
    window: int | None = None,
    alpha: float = 0.3,
) -> SimResult:
    """Run one batch of tasks through ``policy`` and report when it finished.

    Args:
        policy: the balancing policy under test (a fresh one: policies keep state).
        workers: the simulated workers.
        sizes: each task's work, in seconds on a worker of speed 1.
        prefetch: leases a worker may hold per slot.
        window: the most tasks the client keeps unfinished (``None``: submit all at once).
        alpha: the smoothing of the measured averages.

    Raises:
        ValueError: no workers, or a non-positive slot count, speed, prefetch or window.
    """
    if not workers:
        raise ValueError("simulate needs at least one worker")
    if prefetch < 1 or (window is not None and window < 1):
        raise ValueError("prefetch and window must be at least 1")
    if any(w.slots < 1 or w.speed <= 0 for w in workers):
        raise ValueError("every worker needs at least one slot and a positive speed")
    pool = [_SimWorker(w.id, w.slots, w.speed, run=Ewma(alpha), pull=Ewma(alpha)) for w in workers]
    events: list[tuple[float, int, _SimWorker, int]] = []  # (finish time, seq, worker, task)
    unsubmitted = deque(range(len(sizes)))
    queued: deque[int] = deque()
    submitted_at = [0.0] * len(sizes)
    turnaround = 0.0
    now, seq = 0.0, 0

    def submit(count: int) -> None:
        for _ in range(min(count, len(unsubmitted))):
            task = unsubmitted.popleft()
            submitted_at[task] = now
            queued.append(task)

    def start(worker: _SimWorker, task: int, dispatched_at: float) -> None:
        nonlocal seq
        worker.running += 1
        worker.pull.update(now - dispatched_at)
        seq += 1
        heapq.heappush(events, (now + sizes[task] / worker.speed, seq, worker, task))

    def dispatch() -> None:
        while queued:
            candidates = [w for w in pool if w.inflight < w.slots * prefetch]
            chosen = policy.choose(candidates) if candidates else None
            if chosen is None:
                return
            worker = next(w for w in pool if w is chosen)
            task = queued.popleft()
            worker.inflight += 1
            if worker.running < worker.slots:
                start(worker, task, now)
            else:
                worker.backlog.append((task, now))

    submit(len(sizes) if window is None else window)
    dispatch()
    while events:
        now = events[0][0]
        while events and events[0][0] == now:  # everything finishing at this instant
            _, _, worker, task = heapq.heappop(events)
            worker.running -= 1
            worker.inflight -= 1
            worker.done += 1
            worker.run.update(sizes[task] / worker.speed)
            turnaround += now - submitted_at[task]
            if worker.backlog:
                start(worker, *worker.backlog.popleft())
            submit(1 if window is not None else 0)
        dispatch()
    if queued or unsubmitted:
        raise RuntimeError(f"policy {policy.name!r} left {len(queued)} tasks undispatched")
    return SimResult(policy.name, now, {w.id: w.done for w in pool}, turnaround / max(len(sizes), 1))
