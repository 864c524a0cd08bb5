"""The dashboard's memory: a bounded ring of recent tasks and events, and the counters behind
the charts and the metrics.

Technique: *observe the effects, off the hot path, in fixed memory*. The coordinator already
turns every decision into an :class:`~minipool.cluster.effects.Effects` object (tasks to send,
outcomes to deliver) and carries it out in one function. A dashboard only has to see those
objects: :meth:`History.observe` is called there with each one, and does nothing but put it,
stamped with the time, on a queue -- no lock, no formatting, no copy. A monitor thread
:meth:`drains <History.drain>` that queue a few times a second and turns it into records.

Everything is bounded, so a dashboard open for days uses the same memory as one open for a
minute: at most :data:`TASKS` task records (the oldest leave first), :data:`EVENTS` events,
:data:`SAMPLES` one-second samples, and of each task body :data:`BODY_KEEP` bytes (only what
the page shows a person; see :mod:`minipool.dashboard.peek`). Sizes are in docs/dashboard.md.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from typing import Any

from ..cluster.effects import Effects
from .peek import describe_call, describe_value

__all__ = ["TaskRecord", "History", "TASKS", "EVENTS", "SAMPLES", "BODY_KEEP", "RUNTIME_BUCKETS"]

#: Task records kept (the most recently started).
TASKS = 2000
#: Events kept.
EVENTS = 1000
#: One-second samples kept for the charts (five minutes).
SAMPLES = 300
#: Bytes of a task's body or result kept for its description.
BODY_KEEP = 4096
#: Upper bounds, in seconds, of the run-time histogram's buckets (Prometheus ``le``).
RUNTIME_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)
_FAILURE = 13  # wire.Kind.FAILURE


_TRANSPORTS: dict[type, str] = {}


def transport_of(peer: Any) -> str:
    """The transport a peer came in by ("tcp", "ws", "http", "zmq"), or "local" in-process."""
    link = peer.link
    if link is None:
        return "local"
    kind = type(link.conn)
    name = _TRANSPORTS.get(kind)
    if name is None:
        module = kind.__module__.rpartition(".")[2]
        name = _TRANSPORTS[kind] = {"websocket": "ws", "httpserver": "http", "routersocket": "zmq"}.get(
            module, module
        )
    return name


class TaskRecord:
    """One task as the dashboard remembers it (a worker has held it at least once)."""

    __slots__ = (
        "id",
        "number",
        "state",
        "worker",
        "submitted",
        "started",
        "finished",
        "attempts",
        "body",
        "codec",
        "result",
        "result_fmt",
        "result_codec",
        "size",
        "transport",
        "result_text",
        "_described",
    )

    def __init__(self, task: Any, worker: str, stamp: float, mono: float) -> None:
        self.id = f"{task.owner_id}-{task.client_number}"
        self.number = task.number
        self.state = "running"
        self.worker = worker
        self.submitted = stamp - max(0.0, mono - task.submitted_at)
        self.started = stamp
        self.finished: float | None = None
        self.attempts = 1
        self.body = bytes(task.body[:BODY_KEEP])
        self.codec = task.codec
        self.size = len(task.body)
        self.transport = "local"  # the worker's
        self.result: bytes | None = None
        self.result_fmt = 0
        self.result_codec = "none"
        self.result_text: str | None = None  # described at once when too large to keep
        self._described: tuple[str, str] | None = None

    def call(self) -> tuple[str, str]:
        """``(name, arguments)`` from the body, read once and kept."""
        if self._described is None:
            if self.size > BODY_KEEP and self.codec != "none":
                self._described = ("?", f"(a compressed body of {self.size} bytes)")
            else:
                self._described = describe_call(self.body, self.codec)
        return self._described

    @property
    def runtime(self) -> float | None:
        return None if self.finished is None else round(self.finished - self.started, 6)

    def to_json(self, detail: bool = False) -> dict[str, Any]:
        name, args = self.call()
        report: dict[str, Any] = {
            "id": self.id,
            "name": name,
            "state": self.state,
            "worker": self.worker,
            "submitted": round(self.submitted, 3),
            "started": round(self.started, 3),
            "finished": None if self.finished is None else round(self.finished, 3),
            "runtime": self.runtime,
            "attempts": self.attempts,
        }
        if detail:
            report["args"] = args
            if self.result is not None:
                text = self.result_text or describe_value(self.result, self.result_fmt, self.result_codec)
                report["result" if self.state == "done" else "error"] = text
        return report


class History:
    """The ring of tasks and events, the samples, and running totals; fed by :meth:`observe`.

    Only the monitor thread calls the other methods (readers take :attr:`lock`).
    """

    def __init__(self, tasks: int = TASKS, events: int = EVENTS, samples: int = SAMPLES) -> None:
        self.lock = threading.Lock()
        self._inbox: queue.SimpleQueue[tuple[float, Effects]] = queue.SimpleQueue()
        self.capacity = tasks
        self.tasks: collections.OrderedDict[str, TaskRecord] = collections.OrderedDict()
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=events)
        self.samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=samples)
        self._seq = itertools.count(1)
        self.last_seq = 0
        self.runtime_counts = [0] * (len(RUNTIME_BUCKETS) + 1)  # the last one is +Inf
        self.runtime_sum = 0.0
        self.bytes: dict[tuple[str, str], int] = collections.defaultdict(int)  # (transport, in|out)
        self.finished = {"done": 0, "failed": 0}

    def observe(self, fx: Effects) -> None:
        """Called by the coordinator with every Effects it applies: one queue put, no more."""
        if fx.sends or fx.deliveries:
            self._inbox.put((time.time(), fx))

    def drain(self) -> int:
        """Turn what was observed into records; return how many Effects were read."""
        mono_now, wall_now = time.monotonic(), time.time()
        count = 0
        with self.lock:
            while True:
                try:
                    stamp, fx = self._inbox.get_nowait()
                except queue.Empty:
                    return count
                count += 1
                mono = mono_now - (wall_now - stamp)
                for worker, task, _ in fx.sends:
                    self._leased(worker, task, stamp, mono)
                for client, number, outcome in fx.deliveries:
                    self._finished(f"{client.id}-{number}", outcome, stamp, transport_of(client))

    def _leased(self, worker: Any, task: Any, stamp: float, mono: float) -> None:
        key = f"{task.owner_id}-{task.client_number}"
        record = self.tasks.get(key)
        transport = transport_of(worker)
        self.bytes[(transport, "out")] += len(task.body)
        if record is None:
            record = self.tasks[key] = TaskRecord(task, worker.name, stamp, mono)
            record.transport = transport
            if len(self.tasks) > self.capacity:
                self.tasks.popitem(last=False)
        else:  # leased again: its worker was lost, or it was restored
            record.attempts += 1
            record.worker, record.started, record.state = worker.name, stamp, "running"
            self.tasks.move_to_end(key)

    def _finished(self, key: str, outcome: Any, stamp: float, transport: str) -> None:
        self.bytes[(transport, "out")] += len(outcome.body)
        record = self.tasks.get(key)
        if record is None or record.state != "running":
            return  # a watcher's copy, a stored outcome handed out again, or forgotten
        self.bytes[(transport, "in")] += record.size  # the body its client sent
        self.bytes[(record.transport, "in")] += len(outcome.body)  # the result its worker sent
        failed = int(outcome.kind) == _FAILURE
        record.state = "failed" if failed else "done"
        record.finished = stamp
        record.result = bytes(outcome.body[:BODY_KEEP])
        record.result_fmt, record.result_codec = int(outcome.fmt), outcome.codec
        if len(outcome.body) > BODY_KEEP:  # its prefix may not parse: read the whole, now
            record.result_text = describe_value(outcome.body, record.result_fmt, outcome.codec)
        self.finished[record.state] += 1
        runtime = max(0.0, stamp - record.started)
        self.runtime_sum += runtime
        for i, bound in enumerate(RUNTIME_BUCKETS):
            if runtime <= bound:
                self.runtime_counts[i] += 1
                break
        else:
            self.runtime_counts[-1] += 1
        if failed:
            self.event("task-failed", task=key, worker=record.worker, error=record.to_json(True).get("error"))

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append an event (the caller holds :attr:`lock`, or is the only writer)."""
        seq = next(self._seq)
        event = {"seq": seq, "time": round(time.time(), 3), "kind": kind, **fields}
        self.events.append(event)
        self.last_seq = seq
        return event

    def events_since(self, since: int, limit: int) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["seq"] > since][:limit]

    def select(self, state: str | None, name: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest task records first, filtered by state and by a substring of the name."""
        with self.lock:
            records = list(reversed(self.tasks.values()))
        out = []
        for record in records:
            if state and record.state != state:
                continue
            if name and name not in record.call()[0]:
                continue
            out.append(record.to_json())
            if len(out) >= limit:
                break
        return out

    def find(self, task_id: str) -> TaskRecord | None:
        with self.lock:
            return self.tasks.get(task_id)

    def note_outcome(self, task_id: str, state: str) -> None:
        """A task the dashboard itself ended (cancelled or terminated)."""
        with self.lock:
            record = self.tasks.get(task_id)
            if record is not None and record.state == "running":
                record.state, record.finished = state, time.time()
            self.event(f"task-{state}", task=task_id)
