"""What the dashboard shows of one task: a record made when asked, from the coordinator's own
objects.

Technique: *describe lazily*. A :class:`TaskRecord` holds references -- the coordinator's Task
(or, for a large body, a :class:`BodyPrefix` of it) and its Outcome, which nothing changes
once they are made -- and reads them (:mod:`minipool.dashboard.peek`) only when a person asks:
most tasks of a burst are never looked at.
"""

from __future__ import annotations

import time
from typing import Any

from .peek import describe_call, describe_value

__all__ = ["TaskRecord", "BodyPrefix", "BODY_KEEP", "transport_of", "wall_time"]

#: Bytes of a task's body or result kept for its description.
BODY_KEEP = 4096

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


class BodyPrefix:
    """What the ring keeps of a task whose body is too large to hold on to: a prefix, and the
    lease it was seen with."""

    __slots__ = (
        "number",
        "owner_id",
        "client_number",
        "submitted_at",
        "leased_at",
        "worker",
        "codec",
        "body",
        "size",
    )

    def __init__(self, task: Any, worker: Any) -> None:
        self.number, self.owner_id, self.client_number = task.number, task.owner_id, task.client_number
        self.submitted_at, self.leased_at, self.worker = task.submitted_at, task.leased_at, worker
        self.codec, self.body, self.size = task.codec, bytes(task.body[:BODY_KEEP]), len(task.body)


def wall_time(mono: float, now_wall: float, now: float) -> float:
    """A ``time.monotonic()`` instant as a wall-clock time, to three decimals."""
    return round(now_wall - (now - mono), 3)


class TaskRecord:
    """One task as the dashboard shows it (a worker has held it at least once): made when
    someone asks, from the lease the ring remembers, and refreshed at each ask.

    It keeps references (the coordinator's own Task and Outcome objects, which nothing changes
    once they are made, or a prefix of a large body) and reads them when asked. Times are
    ``time.monotonic()`` instants, shown as wall-clock times.
    """

    __slots__ = (
        "task",
        "worker",
        "transport",
        "received",
        "started",
        "state",
        "finished",
        "attempts",
        "outcome",
        "_text",
    )

    def __init__(self, task: Any) -> None:
        self.task = task
        self.worker = ""
        self.transport = ""
        self.received = 0.0  # when it was leased to its worker
        self.started: float | None = None  # when its worker began it (None: not yet)
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
            if isinstance(task, BodyPrefix) and task.codec != "none":
                self._text = ("?", f"(a compressed body of {task.size} bytes)")
            else:
                self._text = describe_call(task.body, task.codec)
        return self._text

    @property
    def runtime(self) -> float | None:
        """Seconds from its start to its outcome."""
        if self.finished is None:
            return None
        return round(self.finished - (self.received if self.started is None else self.started), 6)

    def to_json(self, detail: bool = False) -> dict[str, Any]:
        name, args = self.call()
        now_wall, now = time.time(), time.monotonic()
        report: dict[str, Any] = {
            "id": self.id,
            "name": name,
            "state": self.state,
            "worker": self.worker,
            "submitted": wall_time(self.task.submitted_at, now_wall, now),
            "received": wall_time(self.received, now_wall, now),
            "started": None if self.started is None else wall_time(self.started, now_wall, now),
            "finished": None if self.finished is None else wall_time(self.finished, now_wall, now),
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
