"""The coordinator's message handling: what each message does, and every message it sends.

Technique: *effects applied in one place*. A message from a peer becomes one call into the
sans-I/O :class:`~minipool.cluster.scheduler.Scheduler`, under one lock held only for
dictionary work; the :class:`~minipool.cluster.scheduler.Effects` it returns (journal records,
leases, outcomes, replies) are carried out by :meth:`Broker.apply` once the lock is released,
and that is the one function that encodes and sends what the coordinator says to a peer. Task
bodies are forwarded as opaque bytes: the coordinator cannot be attacked through them and
spends no time decoding them.

The sockets are the business of :class:`~minipool.cluster.coordinator.Coordinator`, which is a
Broker with listeners, readers and a clock; an in-process client (the embedded pool) calls the
Broker's methods directly (:meth:`Broker.submit_local`, :meth:`Broker.started`).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..errors import MinipoolError, ProtocolError
from ..topics.service import TopicService
from ..wire import Format, Kind, Message, encode, encode_parts, refusal
from .outbox import Batch
from .registry import Registry
from .scheduler import Effects, Scheduler
from .session import HEARTBEAT, LIVENESS
from .state import ClientState, LocalClientState, TaskClientState, WorkerState

__all__ = ["Broker"]

log = logging.getLogger("minipool.coordinator")

_TASK = Kind.TASK
_HEARTBEAT = encode(Message(Kind.HEARTBEAT))  # the same bytes every time
#: What a worker's tasks may ask as a client does, on the worker's own connection.
_TASK_REQUESTS = frozenset((Kind.SUBMIT, Kind.CANCEL, Kind.LEASES, Kind.STATUS, Kind.FETCH, Kind.LOOKUP))
#: Seconds a reader waits, when a local worker's connection closes, for its process's exit
#: status (a dead process's socket closes a moment before the process can be reaped).
EXIT_WAIT = 0.5


def _task_numbers(value: Any) -> list[int]:
    """The ``tasks`` header of a LEASES request: a list of task numbers.

    Raises:
        ProtocolError: it is anything else.
    """
    if not isinstance(value, list) or not all(type(n) is int for n in value):
        raise ProtocolError("LEASES needs a list of task numbers in its 'tasks' header")
    return value


class Broker:
    """The scheduler, the registry and the journal behind one lock, and what messages do to them.

    Args:
        heartbeat: seconds between heartbeats (a registry entry lives ``heartbeat * liveness``).
        liveness: heartbeats a peer may miss before it is declared dead.
        max_losses: workers a task may lose before it fails with WorkerLost.
        balance: the balancing policy's name.
        journal: a directory for the write-ahead journal (``None``: state lives in memory only).
        fsync: the journal's fsync policy.
    """

    def __init__(
        self,
        *,
        heartbeat: float = HEARTBEAT,
        liveness: int = LIVENESS,
        max_losses: int = 3,
        balance: str = "least-loaded",
        journal: str | None = None,
        fsync: str = "everysec",
    ) -> None:
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.lock = threading.Lock()
        self.scheduler = Scheduler(max_losses=max_losses, balance=balance, journaling=journal is not None)
        self.registry = Registry()
        self.journal = None
        if journal is not None:
            from .task_journal import TaskJournal

            self.journal = TaskJournal(journal, fsync)
            self.journal.restore(self.scheduler)
        #: The message log: topics and consumer groups (docs/topics.md), on disk beside the journal.
        self.topics = TopicService(None if journal is None else f"{journal}/topics", fsync=fsync)
        self.closing = threading.Event()
        #: ``process_exit(pid, wait)``: how a worker process of this host ended ("was killed by
        #: SIGKILL"), or None; set by whoever supervises the local workers (the embedded Pool).
        self.process_exit: Callable[[int, float], str | None] | None = None
        #: Called with every Effects that :meth:`apply` carries out, before it does (a
        #: monitor's history: it must only queue it, for it runs on the hot path).
        self.observer: Callable[[Effects], None] | None = None
        #: Named providers of JSON-able state a monitor shows beside the tasks, e.g.
        #: ``sections["topics"] = topics.describe`` (see docs/dashboard.md).
        self.sections: dict[str, Callable[[], Any]] = {"topics": self.topics.describe}
        #: Answers a DASHBOARD request, ``(method, target, body) -> (status, value)``: set by
        #: a dashboard watching this coordinator, for a dashboard in another process.
        self.dashboard_api: Callable[[str, str, bytes], tuple[int, Any]] | None = None

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: workers, queue depth, counts, registry entries, the journal."""
        scheduler = self.scheduler
        with self.lock:
            workers = [w.info() for w in scheduler.workers.values()]
            report = {
                "workers": workers,
                "slots": sum(w["slots"] for w in workers),
                "clients": sum(not c.monitor for c in scheduler.clients.values()),
                "queued": scheduler.queued,
                "running": sum(len(w.leases) for w in scheduler.workers.values()),
                "waiting": sum(len(w.waiting) for w in scheduler.workers.values()),
                "balance": scheduler.policy.name,
                **scheduler.counts,
                "registry": self.registry.to_json(),
            }
        report["journal"] = self.journal.describe() if self.journal is not None else None
        report["topics"] = self.topics.describe()
        return report

    def apply(self, fx: Effects, batch: Batch | None = None) -> None:
        """Carry out a scheduler call's effects, outside the lock: journal, then TASKs, then
        outcomes, then replies, then heartbeats, then refusals. Every message the coordinator
        sends a peer is encoded and sent here. ``batch``: collect the writes for the end of a
        reader's burst instead of sending each now (heartbeats and refusals never wait).

        An in-process client gets no bytes: its outcomes are handed to its ``resolve``
        (fields, no Message), its replies to its ``on_message``.
        """
        observer = self.observer
        if observer is not None:
            observer(fx)
        if fx.records and self.journal is not None:
            self.journal.write(fx.records)
        for worker, task, urgent in fx.sends:
            headers = None if task.timeout is None else {"timeout": task.timeout}
            if task.lend:  # (only for a worker whose tasks keep children: see TaskQueue.lease)
                headers = {**(headers or {}), "lend": task.lend}
            data = encode_parts(_TASK, task.number, task.body, task.fmt, task.codec, headers, task.body_crc)
            if batch is None:
                outbox = worker.link.outbox
                outbox.put(data, flush=urgent)
                # Held back, it relies on the worker's reader to flush before it blocks. But the
                # worker may have finished everything since the lease was decided, and its
                # reader may be blocked already, with the worker idle: then it goes now.
                if not urgent and len(worker.leases) <= worker.slots:
                    outbox.flush()
            else:
                batch.add(worker.link.outbox, data)
        for client, number, outcome in fx.deliveries:
            if isinstance(client, LocalClientState):
                resolve = client.resolve
                if resolve is not None:  # the embedded pool's fast path
                    resolve(number, outcome.kind, outcome.fmt, outcome.codec, outcome.body)
                else:
                    client.on_message(
                        Message(outcome.kind, number, outcome.body, fmt=outcome.fmt, codec=outcome.codec)
                    )
                continue
            data = encode_parts(
                outcome.kind, number, outcome.body, outcome.fmt, outcome.codec, None, outcome.body_crc
            )
            if batch is None:
                client.link.outbox.put(data)
            else:
                batch.add(client.link.outbox, data)
        for peer, message in fx.replies:
            if isinstance(peer, LocalClientState):
                peer.on_message(message)
            elif batch is None:
                peer.link.outbox.put(encode(message))
            else:
                batch.add(peer.link.outbox, encode(message))
        if fx.heartbeats:  # (tested first: the path of a task has none, and no loop is cheaper)
            for peer in fx.heartbeats:
                peer.link.outbox.try_put(_HEARTBEAT)
        if fx.refusals:
            for conn, reason, authentication in fx.refusals:
                try:
                    conn.send(refusal(reason, authentication=authentication))
                except (MinipoolError, OSError):
                    pass  # it may be gone already: closing it is all that is left
                conn.close()

    def reply(self, client: ClientState, message: Message, batch: Batch | None) -> None:
        fx = Effects()
        fx.reply(client, message)
        self.apply(fx, batch)

    def refuse(self, conn: Any, reason: str, *, authentication: bool = False) -> None:
        """Send the peer on ``conn`` an ERROR saying why, and close the connection."""
        fx = Effects()
        fx.refuse(conn, reason, authentication=authentication)
        self.apply(fx)

    def attach(self, peer: WorkerState | ClientState) -> None:
        fx = Effects()
        stale = None
        with self.lock:
            if isinstance(peer, WorkerState):
                self.registry.register(
                    peer.id,
                    address=peer.address or "local",
                    services=peer.services,
                    slots=peer.slots,
                    meta={"role": "worker", **peer.meta},
                    ttl=self.heartbeat * self.liveness,
                )
                self.scheduler.worker_joined(peer, fx)
            else:
                stale = self.scheduler.client_joined(peer)
        if isinstance(peer, WorkerState):
            log.info("%s joined with %d slot(s)", peer.describe(), peer.slots)
        if stale is not None:
            stale.close()  # a client reconnecting under the same id replaces its old session
        self.apply(fx)

    def detach(self, peer: WorkerState | ClientState) -> None:
        peer.close()
        # Only a worker holding leases needs a reason (its tasks may fail with WorkerLost).
        reason = self.why_lost(peer) if isinstance(peer, WorkerState) and peer.leases else ""
        fx = Effects()
        with self.lock:
            if isinstance(peer, WorkerState):
                if self.scheduler.workers.get(peer.id) is peer:
                    self.registry.deregister(peer.id)
                    if peer.leases and not self.closing.is_set():
                        log.warning(
                            "%s lost with %d task(s) in flight; requeued", peer.describe(), len(peer.leases)
                        )
                self.scheduler.worker_lost(peer, fx, reason)
                if peer.tasks_client is not None:  # its tasks' queued children: cancelled
                    self.scheduler.client_left(peer.tasks_client, fx)
            else:
                self.scheduler.client_left(peer, fx)
        if not isinstance(peer, WorkerState):
            self.topics.member_left(peer.id, peer)  # its unacknowledged records go to the others
        self.apply(fx)

    def why_lost(self, worker: WorkerState) -> str:
        """Why ``worker`` is gone, for the WorkerLost a task may fail with: how its process
        ended, if it ran beside us under a supervisor, or why we dropped it."""
        pid = worker.meta.get("pid")
        if (
            worker.lost_reason is None
            and self.process_exit is not None
            and isinstance(pid, int)
            and worker.meta.get("host") == socket.gethostname()
        ):
            ended = self.process_exit(pid, EXIT_WAIT)
            if ended is not None:
                return ended
        return worker.lost_reason or "closed its connection"

    def handle_client_message(self, client: ClientState, msg: Message, batch: Batch | None = None) -> None:
        """Act on one message from a client: remote (from its reader) or in-process (a call)."""
        kind = msg.kind
        if kind is Kind.SUBMIT:
            self.submit_message(client, msg, batch)
        elif kind is Kind.CANCEL:
            fx = Effects()
            with self.lock:
                self.scheduler.cancel(client.id, msg.id, fx)
            self.apply(fx, batch)
        elif kind is Kind.LEASES:
            started, cancelled = self.started(
                client, _task_numbers(msg.headers.get("tasks")), bool(msg.headers.get("cancel")), batch
            )
            body = json.dumps({"started": started, "cancelled": cancelled}).encode()
            self.reply(client, Message(Kind.LEASES_REPLY, msg.id, body, fmt=Format.JSON), batch)
        elif kind is Kind.STATUS:
            self.reply(
                client,
                Message(Kind.STATUS_REPLY, msg.id, json.dumps(self.status()).encode(), fmt=Format.JSON),
                batch,
            )
        elif kind is Kind.FETCH:
            owner, _, number = str(msg.headers.get("task", "")).rpartition("-")
            if not number.isdigit():
                raise ProtocolError(f"FETCH of a malformed task id {msg.headers.get('task')!r}")
            fx = Effects()
            with self.lock:
                self.scheduler.fetch(client, (owner, int(number)), msg.id, fx)
            self.apply(fx, batch)
        elif kind is Kind.REGISTER:
            self.register_entry(msg.headers)
        elif kind is Kind.LOOKUP:
            with self.lock:
                entries = [e.to_json() for e in self.registry.lookup(str(msg.headers.get("service")))]
            self.reply(
                client,
                Message(Kind.LOOKUP_REPLY, msg.id, json.dumps(entries).encode(), fmt=Format.JSON),
                batch,
            )
        elif 50 <= kind < 70 or kind is Kind.TOPIC_TRANSACT:  # a topic's, or a pipe set's step
            self.reply(client, self.topics.handle(client.id, client, msg), batch)
        elif kind is Kind.DASHBOARD:
            self.reply(client, self.dashboard_reply(msg), batch)
        elif kind is not Kind.HEARTBEAT:
            raise ProtocolError(f"a client may not send {kind.name}")

    def dashboard_reply(self, msg: Message) -> Message:
        """The answer to a DASHBOARD request (a 404 when no dashboard watches this coordinator)."""
        answer = self.dashboard_api
        method, target = str(msg.headers.get("method", "GET")), str(msg.headers.get("target", ""))
        if answer is None:
            status, value = 404, {"error": "this coordinator keeps no history: start it with --dashboard"}
        else:
            status, value = answer(method, target, bytes(msg.body))
        body = json.dumps({"status": status, "value": value}, default=str).encode()
        return Message(Kind.DASHBOARD_REPLY, msg.id, body, fmt=Format.JSON)

    def on_worker_burst(self, worker: WorkerState, burst: list[Message], batch: Batch) -> None:
        """A worker's messages, handled together: its results complete under one lock. Its
        tasks' own requests (a SUBMIT from a running task) are a client's, from its
        :class:`TaskClientState`; WAITING and RESUMED move a task's slot (Dask's secede), HOLDING
        offers a task's kept children to idle slots (work stealing)."""
        outcomes, registers, turns, wrong = [], [], [], None
        for msg in burst:
            kind = msg.kind
            if kind is Kind.RESULT or kind is Kind.FAILURE:
                outcomes.append((msg.id, msg))  # a RESULT has an Outcome's four fields
            elif kind is Kind.REGISTER:
                registers.append(msg.headers)
            elif kind in _TASK_REQUESTS:
                if kind is Kind.SUBMIT:
                    worker.asked = False  # a STEAL's answer (or any child): it may be asked again
                self.handle_client_message(self.tasks_client(worker), msg, batch)
            elif kind is Kind.WAITING or kind is Kind.RESUMED or kind is Kind.HOLDING:
                turns.append(msg)
            elif kind is not Kind.HEARTBEAT:
                wrong = kind
                break
        if outcomes or turns:
            fx = Effects()
            with self.lock:
                for msg in turns:
                    if msg.kind is Kind.WAITING:
                        self.scheduler.waiting(worker, msg.id, fx)
                    elif msg.kind is Kind.RESUMED:
                        self.scheduler.resumed(worker, msg.id)
                    else:
                        self.scheduler.holding(worker, msg.id, fx)
                if outcomes:
                    self.scheduler.complete(worker, outcomes, fx)
            self.apply(fx, batch)
        for entry in registers:
            self.register_entry(entry)
        if wrong is not None:  # the results before it still count
            raise ProtocolError(f"a worker may not send {wrong.name}")

    def tasks_client(self, worker: WorkerState) -> ClientState:
        """The client session of ``worker``'s tasks, made on their first request."""
        client = worker.tasks_client
        if client is None:
            client = worker.tasks_client = TaskClientState(worker)
            with self.lock:
                self.scheduler.client_joined(client)  # a reconnect replaces the old session
        return client

    def submit_message(self, client: ClientState, msg: Message, batch: Batch | None = None) -> None:
        """Accept a SUBMIT from ``client``."""
        fx = Effects()
        with self.lock:
            self.scheduler.submit(
                client.id, msg.id, msg.body, msg.fmt, msg.codec, msg.headers, fx, body_crc=msg.body_crc
            )
        self.apply(fx, batch)

    def started(
        self, client: ClientState, numbers: list[int], cancel: bool, batch: Batch | None = None
    ) -> tuple[list[int], list[int]]:
        """Which of ``client``'s tasks have started; with ``cancel``, drop the others (see
        :meth:`Scheduler.started`). In-process clients call it directly."""
        fx = Effects()
        with self.lock:
            answer = self.scheduler.started(client.id, numbers, cancel, fx)
        self.apply(fx, batch)
        return answer

    def submit_local(
        self, client: ClientState, number: int, body: bytes, codec: str, headers: dict[str, Any] | None
    ) -> None:
        """An in-process client's SUBMIT, without building the envelope."""
        fx = Effects()
        with self.lock:
            self.scheduler.submit(client.id, number, body, Format.PICKLE, codec, headers, fx)
        if fx:  # in a burst, most tasks only join the queue: nothing to carry out
            self.apply(fx)

    def register_entry(self, entry: dict[str, Any]) -> None:
        try:
            with self.lock:
                if entry.get("deregister"):
                    self.registry.deregister(str(entry["key"]))
                    return
                self.registry.register(
                    str(entry["key"]),
                    address=str(entry.get("address", "")),
                    services=[str(s) for s in entry.get("services", ())],
                    slots=int(entry.get("slots", 0)),
                    meta=entry.get("meta"),
                    ttl=float(entry["ttl"]),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed REGISTER: {exc}") from None

    def attach_local(self, client: ClientState) -> None:
        """Register an in-process client (see :class:`minipool.client.LocalClient`)."""
        self.attach(client)

    def detach_local(self, client: ClientState) -> None:
        self.detach(client)
