"""Elastic local workers: the autoscaling policy applied to a coordinator and a supervisor.

Technique: *automatic expansion* (seed 000 §2.1: "when resources run short, add nodes"). The
decision is the pure :class:`~minipool.cluster.autoscale.Autoscaler`; this module is the loop
that feeds it what the coordinator sees (queue length, the oldest task's wait, each worker's
load and idle time) a few times a second and carries out its decision on the supervisor: start
worker processes, or stop the idle ones it names. Stopping a worker is safe at any time: its
leases go back to the queue like those of a crashed one.
"""

from __future__ import annotations

import logging
import threading

from .autoscale import Autoscaler, WorkerLoad
from .coordinator import Coordinator
from .supervisor import Supervisor

__all__ = ["Elastic"]

log = logging.getLogger("minipool.autoscale")


class Elastic:
    """Runs ``autoscaler`` against ``coordinator``'s load, acting on ``supervisor``."""

    def __init__(
        self, coordinator: Coordinator, supervisor: Supervisor, autoscaler: Autoscaler, interval: float = 0.2
    ) -> None:
        self.coordinator = coordinator
        self.supervisor = supervisor
        self.autoscaler = autoscaler
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="minipool-autoscaler")
        self._thread.start()

    @property
    def events(self) -> list[dict]:
        return list(self.autoscaler.events)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            queued, oldest_wait, workers = self.coordinator.load()
            loads = [WorkerLoad(w.id, w.slots, w.inflight, w.idle_since) for w in workers]
            starting = self.supervisor.count - len(loads)
            if starting > 0:  # processes still connecting count as busy workers
                loads += [WorkerLoad(f"starting-{i}", 1, 1, None) for i in range(starting)]
            decision = self.autoscaler.decide(queued, oldest_wait, loads)
            if not decision:
                continue
            log.info("autoscale: %s", decision.reason)
            for _ in range(decision.add):
                self.supervisor.add()
            pids = {w.id: w.meta.get("pid") for w in workers}
            for worker_id in decision.remove:
                pid = pids.get(worker_id)
                if pid is not None:
                    self.supervisor.remove(pid)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
