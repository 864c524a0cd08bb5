"""Effects: what a scheduler call (or the coordinator's clock or door) decided, to carry out.

Technique: *a sans-I/O core returns its effects*. The scheduler changes plain data and appends
here what should happen outside it -- journal records to write, tasks to send to workers,
outcomes to hand to clients, replies -- and the coordinator performs them after releasing its
lock, in one function (:meth:`minipool.cluster.broker.Broker.apply`). The coordinator's clock
adds the heartbeats that are due, and its door the refusals of connections it will not serve,
so that every message the coordinator sends is encoded in that one function. Nothing here is
bytes.
"""

from __future__ import annotations

from typing import Any

from .state import ClientState, Outcome, Peer, Task, WorkerState

__all__ = ["Effects"]


class Effects:
    """What a scheduler call wants done, in order: journal, then lease, then deliver, then reply.

    Decisions, not bytes: a lease names the worker and the task, a delivery the client and the
    outcome. The coordinator turns them into messages and sends them, all in one place
    (:meth:`minipool.cluster.broker.Broker.apply`).

    The lists are created on first use: most calls produce one kind of effect or none, and a
    task's path makes two of these objects, so empty ones should cost nothing.
    """

    __slots__ = ("records", "sends", "deliveries", "replies", "heartbeats", "refusals")

    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] | tuple = ()
        self.sends: list[tuple[WorkerState, Task, bool]] | tuple = ()  # (worker, task, urgent)
        self.deliveries: list[tuple[ClientState, int, Outcome]] | tuple = ()  # (client, its number, ...)
        self.replies: list[tuple[Peer, Any]] | tuple = ()  # (peer, wire.Message)
        self.heartbeats: list[Peer] | tuple = ()
        self.refusals: list[tuple[Any, str, bool]] | tuple = ()  # (connection, reason, authentication)

    def record(
        self, kind: str, task: Task, body: bytes, result: int = 0, fmt: Any = None, codec: str | None = None
    ) -> None:
        """A journal record about ``task`` (see :func:`minipool.cluster.task_journal.pack_task_record`)."""
        records = self.records if isinstance(self.records, list) else []
        self.records = records
        records.append(
            (
                kind,
                task.number,
                task.owner_id,
                task.client_number,
                int(task.fmt if fmt is None else fmt),
                task.codec if codec is None else codec,
                task.priority,
                task.timeout,
                result,
                body,
                task.needs,
            )
        )

    def send(self, worker: WorkerState, task: Task, urgent: bool) -> None:
        """Send ``task`` to ``worker`` as a TASK (``urgent``: it can start at once)."""
        if not self.sends:
            self.sends = []
        self.sends.append((worker, task, urgent))  # type: ignore[union-attr]

    def deliver(self, client: ClientState, number: int, outcome: Outcome) -> None:
        """Hand ``outcome`` to ``client`` as the outcome of its task (or request) ``number``."""
        if not self.deliveries:
            self.deliveries = []
        self.deliveries.append((client, number, outcome))  # type: ignore[union-attr]

    def reply(self, peer: Peer, message: Any) -> None:
        """Send ``peer`` any other message (a status or lookup reply, a greeting)."""
        if not self.replies:
            self.replies = []
        self.replies.append((peer, message))  # type: ignore[union-attr]

    def heartbeat(self, peer: Peer) -> None:
        """Send ``peer`` a HEARTBEAT, unless that could block (a peer that is not reading)."""
        if not self.heartbeats:
            self.heartbeats = []
        self.heartbeats.append(peer)  # type: ignore[union-attr]

    def refuse(self, connection: Any, reason: str, *, authentication: bool = False) -> None:
        """Tell the peer on ``connection`` (a transport's, opaque here) why it is being closed,
        then close it; ``authentication``: its key was wrong, and retrying will not help."""
        if not self.refusals:
            self.refusals = []
        self.refusals.append((connection, reason, authentication))  # type: ignore[union-attr]

    def __bool__(self) -> bool:
        return bool(
            self.records or self.sends or self.deliveries or self.replies or self.heartbeats or self.refusals
        )
