"""What the coordinator knows: tasks, the workers holding leases on them, the clients waiting.

Technique: *leases*. A task handed to a worker is not forgotten: it sits in that worker's
``leases`` table until a result comes back, so when the worker dies the coordinator knows
exactly which tasks to run again. These classes are plain data with a few helpers; every
mutation happens under the coordinator's lock. They do no I/O: a remote peer holds only an
opaque :class:`Link` (its connection and outbox, which the coordinator owns and writes to), and
nothing here encodes or sends a message -- the scheduler returns what is to be sent, and the
coordinator sends it (:meth:`minipool.cluster.broker.Broker.apply`).
"""

from __future__ import annotations

import collections
import enum
import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import IncompatibleInterpreter
from ..wire import Format, Kind, Message
from .balance import ewma_step

__all__ = [
    "TaskState",
    "Task",
    "WorkerState",
    "ClientState",
    "LocalClientState",
    "TaskClientState",
    "Link",
    "Outcome",
    "failure_outcome",
    "incompatible_outcome",
    "lost_outcome",
]

_ids = itertools.count(1)

#: Adaptive prefetch keeps about this many seconds of work queued at each worker slot.
PREFETCH_SECONDS = 0.002
MAX_PREFETCH = 64
EWMA_WEIGHT = 0.2


class TaskState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class Task:
    """One submitted call, as the coordinator sees it (its body stays opaque bytes)."""

    __slots__ = (
        "number",
        "owner_id",
        "client_number",
        "body",
        "fmt",
        "codec",
        "priority",
        "timeout",
        "submitted_at",
        "state",
        "worker",
        "losses",
        "leased_at",
        "needs",
        "body_crc",
        "lend",
    )

    def __init__(
        self,
        number: int,
        owner_id: str,
        client_number: int,
        body: bytes,
        fmt: Any,
        codec: str,
        priority: int = 0,
        timeout: float | None = None,
        submitted_at: float = 0.0,
    ) -> None:
        self.number = number
        self.owner_id = owner_id  # the submitting client's id (it may be disconnected, or not back yet)
        self.client_number = client_number  # the client's own number for the task
        self.body = body
        self.fmt = fmt
        self.codec = codec
        self.priority = priority
        self.timeout = timeout
        self.submitted_at = submitted_at
        self.state = TaskState.QUEUED
        self.worker: WorkerState | None = None
        self.losses = 0
        self.leased_at = 0.0
        self.needs: str | None = None  # the interpreter a by-value function in it needs
        self.body_crc: int | None = None  # the body's CRC-32, when its SUBMIT carried it here
        self.lend = 0  # slots idle when it was leased, if its worker nests (its TASK says so)

    @property
    def key(self) -> tuple[str, int]:
        return (self.owner_id, self.client_number)

    def meta(self) -> dict[str, Any]:
        """What the journal stores beside the body."""
        meta = {
            "n": self.number,
            "c": self.owner_id,
            "i": self.client_number,
            "f": int(self.fmt),
            "k": self.codec,
            "p": self.priority,
        }
        if self.timeout is not None:
            meta["t"] = self.timeout
        if self.needs is not None:
            meta["v"] = self.needs
        return meta


@dataclass(slots=True)
class Outcome:
    """A finished task's result, kept for late or reconnecting clients. Slotted: up to
    RESULT_STORE of these live at once, and each is one object, not two, for the collector."""

    kind: Kind
    fmt: Format
    codec: str
    body: bytes
    body_crc: int | None = None  # the body's CRC-32, if known: forwarding it reads no byte twice


def failure_outcome(kind: str, message: str) -> Outcome:
    """A FAILURE the coordinator makes itself: JSON, so no one has to trust a pickle for it."""
    body = json.dumps({"type": kind, "message": message}).encode()
    return Outcome(Kind.FAILURE, Format.JSON, "none", body)


def incompatible_outcome(task: Task, workers: Iterable[WorkerState]) -> Outcome:
    """The FAILURE of a by-value task none of the connected ``workers`` can load."""
    running = sorted(
        {
            f"{w.interpreter or 'an interpreter it does not name'} (Python {w.meta.get('python', '?')})"
            for w in workers
        }
    )
    return failure_outcome(
        "IncompatibleInterpreter",
        (
            f"this task holds a function shipped by value from {task.needs}, and no connected "
            f"worker can load its code: they run {', '.join(running)}; " + IncompatibleInterpreter.REMEDY
        ),
    )


def lost_outcome(task: Task, worker: WorkerState, reason: str | None) -> Outcome:
    """The FAILURE of a task that has lost too many workers, ``worker`` the last of them."""
    why = reason or worker.blame or "was lost"
    return failure_outcome(
        "WorkerLost", f"task lost {task.losses} workers (the last, {worker.label}, {why}); giving up"
    )


class Link(Protocol):
    """What the state knows of a remote peer's connection: its address, and how to close it.
    The coordinator's link (:class:`minipool.cluster.outbox.Link`) also holds the outbox."""

    @property
    def peer(self) -> str: ...

    def close(self) -> None: ...


class Peer:
    """An authenticated peer: its link (None for one in this process) and liveness clock."""

    local = False

    def __init__(self, link: Any, name: str) -> None:
        self.link = link  # opaque here: the coordinator's Link, which it alone writes to
        self.name = name
        self.last_recv = time.monotonic()
        self.connected_at = time.time()
        self.lost_reason: str | None = None  # why the coordinator dropped it ("was silent ...")

    @property
    def address(self) -> str | None:
        return self.link.peer if self.link is not None else None

    def describe(self) -> str:
        role = type(self).__name__.removesuffix("State").lower()
        return f"{role} {self.name} ({self.address or 'in-process'})"

    def close(self, reason: str | None = None) -> None:
        """Close the connection; ``reason`` (the first one given) says why, for WorkerLost."""
        if reason is not None and self.lost_reason is None:
            self.lost_reason = reason
        if self.link is not None:
            self.link.close()


class WorkerState(Peer):
    """A connected worker: its advertised slots and the tasks it holds leases on."""

    def __init__(
        self, link: Link | None, name: str, slots: int, prefetch: int | None, meta: dict[str, Any]
    ) -> None:
        super().__init__(link, name)
        self.id = f"{name}#{next(_ids)}"
        self.slots = max(1, slots)
        self.fixed_prefetch = prefetch
        self.capacity = self.slots + (self.slots if prefetch is None else max(0, prefetch))
        self.meta = meta
        self.services: tuple[str, ...] = tuple(meta.pop("services", None) or ("default",))
        # The code objects it can load (see minipool.shipping.INTERPRETER); None from a worker
        # that does not say, which then gets no by-value task.
        interpreter = meta.get("interpreter")
        self.interpreter = None if interpreter is None else str(interpreter)
        # The worker process (not this connection): the same after a reconnect, new after a
        # restart. "" from a worker that does not say.
        self.incarnation = str(meta.get("incarnation") or "")
        # Task numbers the process says it still runs or has outcomes for, from its previous
        # connection to this coordinator (see Scheduler.worker_joined).
        self.holding: tuple[int, ...] = ()
        # Why the coordinator dropped this worker, when it did so for cause (silent, a message
        # too large or malformed): its tasks then count the loss even if the process returns.
        # None while the connection stands, or when it simply went (a cut, or a dead process).
        self.blame: str | None = None
        self.leases: dict[int, Task] = {}
        self.tasks_client: ClientState | None = None  # its tasks' own client session, if used
        # Leased tasks waiting on tasks they submitted: still this worker's (lost with it), but
        # holding no slot, so other tasks may be leased in their place (see secede).
        self.waiting: dict[int, Task] = {}
        # Leased tasks that keep children in the worker, which an idle slot may steal (see
        # TaskQueue.offer_steals), and whether a STEAL is out to it, not answered by a SUBMIT.
        self.lending: set[int] = set()
        self.asked = False
        self.nests = False  # its tasks have kept children: its next ones are told of idle slots
        self.done = 0
        self.avg_run: float | None = None  # EWMA of seconds per task, as seen from here
        # EWMA of seconds from a lease until the task can start there: 0 for a task leased to a
        # free slot, and for a prefetched one the wait until a result freed a slot for it (a
        # worker starts its tasks in the order they were leased). Read by the latency policy.
        self.avg_pull: float | None = None
        self._prefetched: collections.deque[Task] = collections.deque()  # leased to busy slots
        self.idle_since: float | None = time.monotonic()
        self._last_result = 0.0

    @property
    def label(self) -> str:
        """Its name and, when it said, its process: ``local/1 (pid 1234 on host)``."""
        pid, host = self.meta.get("pid"), self.meta.get("host")
        return f"{self.name} (pid {pid} on {host})" if pid is not None else self.name

    @property
    def inflight(self) -> int:
        """Tasks leased and not finished (what the balancing policies read)."""
        return len(self.leases)

    @classmethod
    def from_hello(
        cls, link: Link, hello: dict[str, Any], prefetch: int | None, coordinator: str = ""
    ) -> WorkerState:
        """``coordinator``: this coordinator's id; the worker's ``holding`` counts only if its
        previous connection was to this very coordinator (task numbers are its own).

        Raises:
            TypeError, ValueError: a field of the wrong type.
        """
        name = str(hello.get("name") or link.peer)
        meta: dict[str, Any] = {
            k: hello.get(k)
            for k in ("kind", "pid", "host", "python", "interpreter", "services", "incarnation")
            if k in hello
        }
        worker = cls(link, name, int(hello.get("slots", 1)), prefetch, meta)
        holding = hello.get("holding", [])
        if not isinstance(holding, list) or not all(type(n) is int for n in holding):
            raise ValueError("holding must be a list of task numbers")
        if coordinator and hello.get("coordinator") == coordinator:
            worker.holding = tuple(holding)
        return worker

    def lease(self, task: Task) -> None:
        task.leased_at = time.monotonic()
        if len(self.leases) < self.slots:  # a free slot: it starts as it arrives
            self.avg_pull = ewma_step(self.avg_pull, 0.0, EWMA_WEIGHT)
        else:
            self._prefetched.append(task)
        self.leases[task.number] = task
        self.idle_since = None

    def secede(self, number: int) -> bool:
        """Task ``number`` waits on its children: its lease stays, its slot is free (Dask's
        ``secede``). False if this worker holds no such running lease."""
        task = self.leases.pop(number, None)
        if task is not None:
            self.waiting[number] = task
        return task is not None

    def rejoin(self, number: int) -> None:
        """Task ``number`` runs again and takes a slot, even past ``capacity`` for a while."""
        task = self.waiting.pop(number, None)
        if task is not None:
            self.leases[number] = task

    def ask_to_lend(self) -> Message:
        """The STEAL that asks this worker for one of its tasks' kept children."""
        self.asked = True
        return Message(Kind.STEAL, next(iter(self.lending)))

    def held(self) -> list[Task]:
        """Every task this worker holds, running or waiting on its children."""
        return [*self.leases.values(), *self.waiting.values()] if self.waiting else list(self.leases.values())

    def finish(self, number: int, now: float) -> None:
        """Release the lease on task ``number`` and update the run-time estimate."""
        task = self.leases.pop(number, None)
        if task is None and self.waiting:
            task = self.waiting.pop(number, None)
        if self.lending:
            self.lending.discard(number)
        if not self.leases:
            self.idle_since = now
        if task is None:
            return
        self.done += 1
        # A task starts when it is leased or when the worker finished the one before it,
        # whichever is later: for a busy worker, the gap between results is its service time.
        # (Comparisons, not max() and min(): this runs for every result.)
        last = self._last_result
        sample = now - (task.leased_at if task.leased_at > last else last)
        self._last_result = now
        avg = self.avg_run = ewma_step(self.avg_run, sample, EWMA_WEIGHT)
        prefetched = self._prefetched
        while prefetched:  # the slot this result freed goes to the oldest prefetched task
            waiting = prefetched.popleft()
            if self.leases.get(waiting.number) is waiting:  # (not one that has left since)
                self.avg_pull = ewma_step(self.avg_pull, now - waiting.leased_at, EWMA_WEIGHT)
                break
        if self.fixed_prefetch is None:
            # Adaptive prefetch: queue about PREFETCH_SECONDS of work at the worker. Tiny tasks
            # get a deep queue (no idle gaps between them); long ones get one spare, so a task
            # never waits behind a long one while another worker sits idle.
            depth = int(PREFETCH_SECONDS / (avg if avg > 1e-6 else 1e-6))
            self.capacity = self.slots * (1 + (MAX_PREFETCH if depth > MAX_PREFETCH else depth or 1))

    def info(self) -> dict[str, Any]:
        idle = None if self.idle_since is None else round(time.monotonic() - self.idle_since, 3)
        avg = None if self.avg_run is None else round(self.avg_run, 6)
        return {
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "slots": self.slots,
            "inflight": len(self.leases),
            "waiting": len(self.waiting),
            "capacity": self.capacity,
            "done": self.done,
            "avg_run": avg,
            "idle_for": idle,
            "services": list(self.services),
            **self.meta,
        }


class ClientState(Peer):
    """A connected client and the tasks it is waiting for, by its own task ids."""

    def __init__(self, link: Link | None, client_id: str, monitor: bool = False) -> None:
        super().__init__(link, client_id)
        self.id = client_id
        self.monitor = monitor  # only looks (``python -m minipool status``): not counted as a client

    @classmethod
    def from_hello(cls, link: Link, hello: dict[str, Any]) -> ClientState:
        return cls(
            link, str(hello.get("client") or f"anonymous-{next(_ids)}"), monitor=hello.get("monitor") is True
        )


class LocalClientState(ClientState):
    """A client living in the coordinator's own process: messages are handed over by a call.

    Args:
        on_message: called with each message for the client (status and lookup replies).
        resolve: called with ``(number, kind, fmt, codec, body)`` for each outcome; without
            it, outcomes reach ``on_message`` as RESULT / FAILURE messages.
    """

    local = True

    def __init__(
        self,
        client_id: str,
        on_message: Callable[[Any], None],
        resolve: Callable[[int, Any, Any, str, bytes], None] | None = None,
    ) -> None:
        super().__init__(None, client_id)
        self.on_message = on_message
        self.resolve = resolve


class TaskClientState(ClientState):
    """The client session of a worker's own tasks (tasks that submit tasks): their SUBMITs
    and the outcomes for them travel on the worker's connection. Its liveness is the
    worker's, so the ticker skips it; it is no client of the pool's, so status leaves it out;
    and closing it closes nothing: the connection is the worker's. Its id is the worker
    process's incarnation, so a worker that reconnects resubmits under the same keys."""

    local = True  # no connection of its own to watch or to beat on

    def __init__(self, worker: WorkerState) -> None:
        super().__init__(worker.link, worker.incarnation or worker.id, monitor=True)

    def close(self, reason: str | None = None) -> None:
        if reason is not None and self.lost_reason is None:
            self.lost_reason = reason
