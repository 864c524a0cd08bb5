"""The monitor: one thread that turns the coordinator's state into history, a few times a second.

Technique: *sample and diff, beside the hot path*. Tasks reach the history through the
coordinator's observer (see :mod:`minipool.dashboard.history`); every :data:`INTERVAL` seconds
this thread collects what the observer gathered, and finds everything else a person wants to
see change -- workers joining and leaving, requeues, autoscaling, restarts -- by looking at
what the coordinator, its supervisor and its autoscaler already keep, and comparing it with
the last look. The coordinator's lock is held for a few dictionary reads, so the dispatch path
never waits on the dashboard for longer than that. Which leased tasks have started is read
from the leases' order (:func:`lease_states`); the next queued ones from the front of the
queue's sorted line (:func:`line_first`).

Readers that want to know when something changed (the WebSocket feed) wait on :attr:`changed`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from typing import Any

from ..cluster.state import TaskState
from .history import History
from .records import transport_of, wall_time

__all__ = ["Monitor", "INTERVAL", "line_first", "lease_states"]

#: Seconds between two looks: well inside the page's one-second promise.
INTERVAL = 0.2


def line_first(line: Iterable[tuple[Any, ...]], most: int) -> list[Any]:
    """The last items of the first ``most`` entries of a waiting line
    (:data:`minipool.cluster.queueing.Line`, kept in the order its tasks will go), without
    copying it."""
    return [entry[-1] for entry in itertools.islice(line, most)]


def lease_states(scheduler: Any, keys: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, Any]]:
    """What ``scheduler`` says of these unfinished tasks: ``{key: (state, worker)}``, state
    "queued" (requeued, its worker lost), "running" or "reserved" (the caller holds its lock).

    A worker starts its tasks in the order they were leased, one per free slot: of its leases
    (in lease order) the first ``slots`` are running and the rest wait in its prefetch --
    *reserved*, as Celery calls a task a worker has received but not started. Its result is
    the signal that the next one starts; no message says so. A task waiting on its children
    has given its slot back and is running."""
    out: dict[tuple[str, int], tuple[str, Any]] = {}
    heads: dict[Any, set[int]] = {}
    by_key = scheduler.by_key
    for key in keys:
        task = by_key.get(key)
        if task is None:
            continue
        worker = task.worker
        if task.state is TaskState.QUEUED or worker is None:
            out[key] = ("queued", None)
            continue
        head = heads.get(worker)
        if head is None:
            head = heads[worker] = set(itertools.islice(worker.leases, worker.slots))
        running = task.number in head or task.number in worker.waiting
        out[key] = ("running" if running else "reserved", worker)
    return out


class Monitor:
    """Feeds ``history`` from ``coordinator`` (and its ``supervisor`` and ``elastic``, if any).

    Args:
        coordinator: a :class:`~minipool.cluster.broker.Broker` (a Coordinator).
        supervisor: the local workers' :class:`~minipool.cluster.supervisor.Supervisor`.
        elastic: the :class:`~minipool.cluster.elastic.Elastic` autoscaling loop.
    """

    def __init__(
        self, coordinator: Any, history: History | None = None, *, supervisor: Any = None, elastic: Any = None
    ) -> None:
        self.coordinator = coordinator
        self.history = history or History()
        self.supervisor = supervisor
        self.elastic = elastic
        self.changed = threading.Condition()
        self.version = 0
        self._workers: dict[str, tuple[str, str]] = {}
        self._counts: dict[str, int] = dict(coordinator.scheduler.counts)
        self._seen = {"autoscale": time.monotonic() - 1e9, "supervisor": time.time()}
        self._last_sample = 0.0
        self._stop = threading.Event()
        self._looking = threading.Lock()
        self._looked_at_fold = -1
        coordinator.observer = self.history.observe
        self._thread = threading.Thread(target=self._run, daemon=True, name="minipool-dashboard-monitor")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.look()

    def look(self) -> None:
        """One look: collect what was observed, diff the workers and counters, sample. Also
        made by a reader of the events, so that they are as fresh as the tasks it sees (which
        the coordinator's threads record as they go)."""
        with self._looking:
            self._look()

    def refresh(self) -> None:
        """Look now if the history has folded anything since the last look: what a reader of
        the tasks or events calls, so that the events are as fresh as the tasks. Nothing folded,
        the tasks are no fresher than the last look's events and no look is forced (the live
        feed, which reads right after a look, then costs the coordinator nothing more)."""
        if self.history.folds != self._looked_at_fold:
            self.look()

    def _look(self) -> None:
        history = self.history
        self._looked_at_fold = history.folds
        before = history.last_seq
        drained = history.collect()
        coordinator = self.coordinator
        with coordinator.lock:
            scheduler = coordinator.scheduler
            workers = {w.id: (w.name, transport_of(w)) for w in scheduler.workers.values()}
            counts = dict(scheduler.counts)
            queued = scheduler.queued
            running = scheduler.running
            slots = sum(w.slots for w in scheduler.workers.values())
            tasks = len(scheduler.tasks)
        if history.open_leases > 2 * tasks + 1000:  # outcomes that no client was there to take
            by_key = scheduler.by_key
            with coordinator.lock:
                history.forget_open(by_key.__contains__)
        with history.lock:
            for wid in workers.keys() - self._workers.keys():
                history.event("worker-joined", worker=workers[wid][0], id=wid, transport=workers[wid][1])
            for wid in self._workers.keys() - workers.keys():
                history.event("worker-lost", worker=self._workers[wid][0], id=wid)
            self._workers = workers
            for name in ("requeued", "timed_out", "cancelled"):
                grew = counts.get(name, 0) - self._counts.get(name, 0)
                if grew > 0:
                    history.event(f"tasks-{name.replace('_', '-')}", count=grew)
            self._counts = counts
            self._other_events()
            now = time.time()
            if now - self._last_sample >= 1.0:
                self._last_sample = now
                history.samples.append(
                    {
                        "time": round(now, 3),
                        "done": counts.get("done", 0),
                        "failed": counts.get("failed", 0),
                        "queued": queued,
                        "running": running,
                        "workers": len(workers),
                        "slots": slots,
                    }
                )
        if drained or history.last_seq != before:
            with self.changed:
                self.version += 1
                self.changed.notify_all()

    def _other_events(self) -> None:
        """Autoscaling decisions and supervisor restarts since the last look."""
        elastic = self.elastic
        if elastic is not None:
            for event in list(elastic.autoscaler.events):
                if event["time"] > self._seen["autoscale"]:
                    self._seen["autoscale"] = event["time"]
                    self.history.event("autoscale", action=event["action"], reason=event["reason"])
        supervisor = self.supervisor
        if supervisor is not None:
            for event in list(supervisor.events):
                if event["time"] > self._seen["supervisor"]:
                    self._seen["supervisor"] = event["time"]
                    self.history.event(f"process-{event['event']}", pid=event["pid"])

    def wait(self, version: int, timeout: float) -> int:
        """Block until the version moves past ``version`` (or ``timeout``); return it."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != version or self._stop.is_set(), timeout)
            return self.version

    def queued(self, limit: int) -> list[dict[str, Any]]:
        """The next ``limit`` tasks no worker holds yet, in the order they will go (the history
        keeps only tasks a worker has held). The queue is a sorted line, so these are its first
        ``2 * limit`` entries (some may be cancelled), never every task."""
        now_wall, now = time.time(), time.monotonic()
        out = []
        with self.coordinator.lock:
            scheduler = self.coordinator.scheduler
            tasks = scheduler.tasks
            for number in line_first(scheduler.queue, 2 * limit):
                task = tasks.get(number)
                if task is not None and task.state is TaskState.QUEUED:
                    out.append(
                        {
                            "id": f"{task.owner_id}-{task.client_number}",
                            "state": "queued",
                            "priority": task.priority,
                            "submitted": wall_time(task.submitted_at, now_wall, now),
                        }
                    )
                    if len(out) >= limit:
                        break
        return out

    def live(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, Any]]:
        """What the coordinator says of these unfinished tasks now (see :func:`lease_states`)."""
        with self.coordinator.lock:
            return lease_states(self.coordinator.scheduler, keys)

    def close(self) -> None:
        if self.coordinator.observer == self.history.observe:
            self.coordinator.observer = None
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        self._thread.join(5)
