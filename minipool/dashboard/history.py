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

import bisect
import collections
import itertools
import threading
import time
from typing import Any

from ..cluster.effects import Effects
from ..cluster.state import Outcome
from ..wire import Format, Kind
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
#: Effects drained between two releases of the GIL.
YIELD_EVERY = 64
#: Upper bounds, in seconds, of the run-time histogram's buckets (Prometheus ``le``).
RUNTIME_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)


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


class _Copy:
    """What a record keeps of a task whose body is too large to hold on to: a prefix."""

    __slots__ = ("number", "owner_id", "client_number", "submitted_at", "codec", "body", "size")

    def __init__(self, task: Any) -> None:
        self.number, self.owner_id, self.client_number = task.number, task.owner_id, task.client_number
        self.submitted_at, self.codec = task.submitted_at, task.codec
        self.body, self.size = bytes(task.body[:BODY_KEEP]), len(task.body)


class TaskRecord:
    """One task as the dashboard remembers it (a worker has held it at least once).

    Made for every task, so it only keeps references (the coordinator's own Task and Outcome
    objects, which nothing changes once they are made, or a prefix of a large body) and
    describes them when someone asks.
    """

    __slots__ = (
        "task",
        "worker",
        "transport",
        "started",
        "state",
        "finished",
        "attempts",
        "outcome",
        "_text",
    )

    def __init__(self, task: Any, worker: str, transport: str, stamp: float) -> None:
        self.task = task if len(task.body) <= BODY_KEEP else _Copy(task)
        self.worker = worker
        self.transport = transport
        self.started = stamp
        self.state = "running"
        self.finished: float | None = None
        self.attempts = 1
        self.outcome: Any = None
        self._text: tuple[str, str] | None = None

    @property
    def id(self) -> str:
        return f"{self.task.owner_id}-{self.task.client_number}"

    def call(self) -> tuple[str, str]:
        """``(name, arguments)`` from the body, read once and kept."""
        if self._text is None:
            task = self.task
            if isinstance(task, _Copy) and task.codec != "none":
                self._text = ("?", f"(a compressed body of {task.size} bytes)")
            else:
                self._text = describe_call(task.body, task.codec)
        return self._text

    @property
    def runtime(self) -> float | None:
        return None if self.finished is None else round(self.finished - self.started, 6)

    def to_json(self, detail: bool = False) -> dict[str, Any]:
        name, args = self.call()
        submitted = time.time() - (time.monotonic() - self.task.submitted_at)
        report: dict[str, Any] = {
            "id": self.id,
            "name": name,
            "state": self.state,
            "worker": self.worker,
            "submitted": round(min(submitted, self.started), 3),
            "started": round(self.started, 3),
            "finished": None if self.finished is None else round(self.finished, 3),
            "runtime": self.runtime,
            "attempts": self.attempts,
        }
        if detail:
            report["args"] = args
            outcome = self.outcome
            if outcome is not None:
                text = describe_value(outcome.body, int(outcome.fmt), outcome.codec)
                report["result" if self.state == "done" else "error"] = text
        return report


class History:
    """The ring of tasks and events, the samples, and running totals; fed by :meth:`observe`.

    Only the monitor thread calls the other methods (readers take :attr:`lock`).
    """

    def __init__(self, tasks: int = TASKS, events: int = EVENTS, samples: int = SAMPLES) -> None:
        self.lock = threading.Lock()
        # A deque: append and popleft are atomic under the GIL and the cheapest queue there is.
        self._inbox: collections.deque[tuple[float, Effects]] = collections.deque()
        self.capacity = tasks
        self.tasks: collections.OrderedDict[tuple[str, int], TaskRecord] = collections.OrderedDict()
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=events)
        self.samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=samples)
        self._seq = itertools.count(1)
        self.last_seq = 0
        self.runtime_counts = [0] * (len(RUNTIME_BUCKETS) + 1)  # the last one is +Inf
        self.runtime_sum = 0.0
        self.bytes: dict[tuple[str, str], int] = collections.defaultdict(int)  # (transport, in|out)

    def observe(self, fx: Effects) -> None:
        """Called by the coordinator with every Effects it applies: one append, no more."""
        if fx.sends or fx.deliveries:
            self._inbox.append((time.time(), fx))

    def drain(self) -> int:
        """Turn what was observed into records; return how many Effects were read.

        Made for every task, so it is lean: a tuple key, a reference to the coordinator's own
        objects, a bisect for the histogram bucket; everything else waits until asked for.
        """
        count = 0
        transports: dict[int, str] = {}  # id(peer) -> transport, for this drain

        def transport(peer: Any) -> str:
            name = transports.get(id(peer))
            if name is None:
                name = transports[id(peer)] = transport_of(peer)
            return name

        inbox = self._inbox
        pending = len(inbox)  # no more than this: a look ends even while tasks pour in
        while count < pending:
            with self.lock:
                count += self._drain_some(inbox, min(YIELD_EVERY, pending - count), transport)
            # Let the coordinator's threads have the GIL between batches: a thread that wants
            # it back after a socket call would otherwise wait a whole switch interval (5 ms)
            # each time while this one runs -- the convoy that would slow dispatch.
            time.sleep(0)
        return count

    def _drain_some(self, inbox: collections.deque, most: int, transport: Any) -> int:
        """Turn up to ``most`` observed Effects into records; return how many there were."""
        tasks, capacity, sizes = self.tasks, self.capacity, self.bytes
        for count in range(most):
            try:
                stamp, fx = inbox.popleft()
            except IndexError:
                return count
            for worker, task, _ in fx.sends:
                key = (task.owner_id, task.client_number)
                where = transport(worker)
                sizes[(where, "out")] += len(task.body)
                record = tasks.get(key)
                if record is None:
                    tasks[key] = TaskRecord(task, worker.name, where, stamp)
                    if len(tasks) > capacity:
                        tasks.popitem(last=False)
                else:  # leased again: its worker was lost, or it was restored
                    record.attempts += 1
                    record.worker, record.transport, record.started = worker.name, where, stamp
                    record.state = "running"
                    tasks.move_to_end(key)
            for client, number, outcome in fx.deliveries:
                record = tasks.get((client.id, number))
                if record is not None and record.state == "running":
                    self._finished(record, outcome, stamp, transport(client))
        return most

    def _finished(self, record: TaskRecord, outcome: Any, stamp: float, transport: str) -> None:
        failed = outcome.kind == Kind.FAILURE
        record.state = "failed" if failed else "done"
        record.finished = stamp
        body = outcome.body
        if len(body) > BODY_KEEP:  # too large to hold on to: described now, from the whole
            text = describe_value(body, int(outcome.fmt), outcome.codec)
            record.outcome = Outcome(outcome.kind, Format.JSON, "none", text.encode())  # shown as is
        else:
            record.outcome = outcome
        sizes = self.bytes
        sizes[(transport, "out")] += len(body)
        sizes[(transport, "in")] += len(record.task.body)  # the body its client sent
        sizes[(record.transport, "in")] += len(body)  # the result its worker sent
        runtime = stamp - record.started
        self.runtime_sum += runtime
        self.runtime_counts[bisect.bisect_left(RUNTIME_BUCKETS, runtime)] += 1
        if failed:
            self.event(
                "task-failed", task=record.id, worker=record.worker, error=record.to_json(True).get("error")
            )

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

    def find(self, key: tuple[str, int]) -> TaskRecord | None:
        """The record of task ``(client id, its number)``, if the history still has it."""
        with self.lock:
            return self.tasks.get(key)

    def note_outcome(self, key: tuple[str, int], state: str) -> None:
        """A task the dashboard itself ended (cancelled or terminated)."""
        with self.lock:
            record = self.tasks.get(key)
            if record is not None and record.state == "running":
                record.state, record.finished = state, time.time()
            self.event(f"task-{state}", task=f"{key[0]}-{key[1]}")
