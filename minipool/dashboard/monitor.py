"""The monitor: one thread that turns the coordinator's state into history, a few times a second.

Technique: *sample and diff, beside the hot path*. Tasks reach the history through the
coordinator's observer (see :mod:`minipool.dashboard.history`); everything else a person wants
to see change -- workers joining and leaving, requeues, autoscaling, restarts -- is found by
looking, every :data:`INTERVAL` seconds, at what the coordinator, its supervisor and its
autoscaler already keep, and comparing it with the last look. The lock is held for a few
dictionary reads, so the dispatch path never waits on the dashboard for longer than that.

Readers that want to know when something changed (the WebSocket feed) wait on :attr:`changed`.
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Any

from ..cluster.state import TaskState
from .history import History, transport_of

__all__ = ["Monitor", "INTERVAL"]

#: Seconds between two looks: well inside the page's one-second promise.
INTERVAL = 0.2


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
        coordinator.observer = self.history.observe
        self._thread = threading.Thread(target=self._run, daemon=True, name="minipool-dashboard-monitor")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.look()

    def look(self) -> None:
        """One look: drain the observed effects, diff the workers and counters, sample."""
        history = self.history
        before = history.last_seq
        drained = history.drain()
        coordinator = self.coordinator
        with coordinator.lock:
            scheduler = coordinator.scheduler
            workers = {w.id: (w.name, transport_of(w)) for w in scheduler.workers.values()}
            counts = dict(scheduler.counts)
            queued = len(scheduler.queue)
            running = sum(len(w.leases) for w in scheduler.workers.values())
            slots = sum(w.slots for w in scheduler.workers.values())
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
        keeps only tasks a worker has held). The lock is held for a C-level copy of the queue
        and ``limit`` lookups, never for a walk over every queued task."""
        now_wall, now = time.time(), time.monotonic()
        coordinator = self.coordinator
        with coordinator.lock:
            heap = list(coordinator.scheduler.queue)
        first = [entry[2] for entry in heapq.nsmallest(limit * 2, heap)]
        out = []
        with coordinator.lock:
            tasks = coordinator.scheduler.tasks
            for task in filter(None, map(tasks.get, first)):
                if task.state is TaskState.QUEUED:
                    out.append(
                        {
                            "id": f"{task.owner_id}-{task.client_number}",
                            "state": "queued",
                            "priority": task.priority,
                            "submitted": round(now_wall - (now - task.submitted_at), 3),
                        }
                    )
        return out[:limit]

    def close(self) -> None:
        if self.coordinator.observer == self.history.observe:
            self.coordinator.observer = None
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        self._thread.join(5)
