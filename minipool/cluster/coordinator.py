"""The coordinator: a broker and a result backend in one process.

Technique: *the compute pool's pool management and fault recovery* (seed 000 §2.1) and Celery's
broker + backend (seed 002). Clients SUBMIT tasks; the coordinator queues them, leases each to a
worker with a free slot, and forwards the RESULT to the client that asked. It is built as:

* **one lock, no pickle.** All state (the queue, the tasks, the workers) lives behind one lock,
  held only for dictionary work, never across I/O. Task bodies are forwarded as opaque bytes:
  the coordinator cannot be attacked through them and spends no time decoding them.
* **one reader thread per connection**, blocked in ``recv``; sends go through each session's
  flat-combining :class:`~minipool.cluster.session.Outbox`, so whichever thread produced a
  message sends it, and bursts coalesce into single writes.
* **leases and liveness.** A task leased to a worker stays in that worker's ``inflight`` table
  until its result arrives. A worker that disconnects, or misses ``liveness`` heartbeats, loses
  its leases: each task goes back to the front of the queue, unless it has already lost
  ``max_losses`` workers, in which case it fails with ``WorkerLost`` (a task that crashes every
  worker it touches must not loop forever).
* **exactly-once delivery.** A result is forwarded only while its task is still pending; a
  second result for the same task (it ran twice because its first worker was presumed dead)
  is dropped. A client that disconnects has its queued tasks cancelled.

Workers advertise ``slots``; the coordinator sends up to ``slots + prefetch`` tasks to each, so
a worker finds its next task already in its socket buffer when it finishes one.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from typing import Any

from ..errors import AuthenticationError, ConnectionClosed, MinipoolError, ProtocolError
from ..transports.base import Connection, Listener, listen
from ..wire import Format, Kind, Message, decode, encode
from .session import HEARTBEAT, LIVENESS, Batch, server_handshake
from .state import ClientState, Task, TaskState, WorkerState

__all__ = ["Coordinator"]

log = logging.getLogger("minipool.coordinator")

#: Replies collected from one burst of input before they are written anyway.
BATCH_LIMIT = 256


class Coordinator:
    """Accepts clients and workers on one or more URLs and moves tasks between them.

    Args:
        authkey: the shared secret every peer must prove it holds.
        heartbeat: seconds between heartbeats.
        liveness: heartbeats a peer may miss before it is declared dead.
        max_losses: workers a task may lose (die while running it) before it fails with WorkerLost.
        prefetch: tasks sent to a worker beyond its free slots.
        handshake_timeout: seconds a new connection has to authenticate.
        transport_options: passed to :func:`~minipool.transports.base.listen`.
    """

    def __init__(self, authkey: bytes, *, heartbeat: float = HEARTBEAT, liveness: int = LIVENESS,
                 max_losses: int = 3, prefetch: int | None = None, handshake_timeout: float = 10.0,
                 **transport_options: Any) -> None:
        if not authkey:
            raise ValueError("the coordinator needs a non-empty authkey")
        self._key = authkey
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.max_losses = max_losses
        self.prefetch = prefetch
        self.handshake_timeout = handshake_timeout
        self._transport_options = transport_options
        self._lock = threading.Lock()
        self._queue: list[tuple[int, int, int]] = []  # heap of (-priority, order, task number)
        self._order = itertools.count()
        self._front = itertools.count(-1, -1)  # requeued tasks jump the line
        self._numbers = itertools.count(1)
        self._tasks: dict[int, Task] = {}
        self._workers: dict[str, WorkerState] = {}
        self._clients: dict[str, ClientState] = {}
        self._listeners: list[Listener] = []
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self.counts = {"submitted": 0, "done": 0, "failed": 0, "requeued": 0, "cancelled": 0,
                       "workers_lost": 0, "duplicates": 0}
        self._started = time.time()
        self._ticker = self._spawn(self._tick, "minipool-coordinator-ticker")

    # -- lifecycle -------------------------------------------------------------------------

    def serve(self, url: str) -> str:
        """Listen on ``url`` (e.g. ``tcp://127.0.0.1:0``) and return the URL peers should use."""
        # One deadline for the whole opening: the transport's own (TLS, HTTP pairing, WebSocket
        # upgrade) and minipool's authentication.
        options = {"handshake_timeout": self.handshake_timeout, **self._transport_options}
        listener = listen(url, **options)
        self._listeners.append(listener)
        self._spawn(lambda: self._accept_loop(listener), f"minipool-accept {listener.url}")
        log.info("coordinator listening on %s", listener.url)
        return listener.url

    @property
    def urls(self) -> list[str]:
        return [listener.url for listener in self._listeners]

    def _spawn(self, target: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        for listener in self._listeners:
            listener.close()
        with self._lock:
            peers = [*self._workers.values(), *self._clients.values()]
        for peer in peers:
            peer.close()

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -----------------------------------------------------------------------

    def _accept_loop(self, listener: Listener) -> None:
        while not self._closed.is_set():
            try:
                conn = listener.accept()
            except ConnectionClosed:
                return
            except OSError as exc:  # e.g. EMFILE: back off rather than spin
                log.warning("accept failed on %s: %s", listener.url, exc)
                time.sleep(0.1)
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"minipool-peer {conn.peer}").start()

    def _serve(self, conn: Connection) -> None:
        try:
            hello = server_handshake(conn, self._key, self.handshake_timeout)
        except AuthenticationError as exc:
            log.warning("rejected %s: %s", conn.peer, exc)
            self._refuse(conn, str(exc))
            return
        except (MinipoolError, TimeoutError, OSError) as exc:
            log.warning("dropped %s during handshake: %s", conn.peer, exc)
            self._refuse(conn, str(exc))
            return
        role = hello.get("role")
        if role == "worker":
            peer: WorkerState | ClientState = WorkerState.from_hello(conn, hello, self.prefetch)
        elif role == "client":
            peer = ClientState.from_hello(conn, hello)
        else:
            self._refuse(conn, f"unknown role {role!r}")
            return
        self._attach(peer)
        try:
            self._read_loop(peer)
        finally:
            self._detach(peer)

    @staticmethod
    def _refuse(conn: Connection, reason: str) -> None:
        try:
            conn.send(encode(Message(Kind.ERROR, headers={"reason": reason})))
        except (MinipoolError, OSError):
            pass
        conn.close()

    def _read_loop(self, peer: WorkerState | ClientState) -> None:
        conn = peer.conn
        handle = self._on_worker_message if isinstance(peer, WorkerState) else self._on_client_message
        batch = Batch()
        while True:
            try:
                # While replies are waiting, only poll: handle the whole burst, then write once.
                data = conn.recv(timeout=0.0 if batch.count else None)
            except TimeoutError:
                batch.flush()
                continue
            except ConnectionClosed:
                batch.flush()
                return
            except MinipoolError as exc:  # FrameTooLarge, ProtocolError from the transport
                log.warning("closing %s: %s", peer.describe(), exc)
                self._refuse(conn, str(exc))
                return
            peer.last_recv = time.monotonic()
            try:
                handle(peer, decode(data), batch)
            except MinipoolError as exc:
                batch.flush()
                log.warning("closing %s: %s", peer.describe(), exc)
                self._refuse(conn, str(exc))
                return
            if batch.count >= BATCH_LIMIT:
                batch.flush()

    def _attach(self, peer: WorkerState | ClientState) -> None:
        with self._lock:
            if isinstance(peer, WorkerState):
                self._workers[peer.id] = peer
                sends = self._dispatch_locked()
            else:
                old = self._clients.get(peer.id)
                self._clients[peer.id] = peer
                sends = []
        if isinstance(peer, WorkerState):
            log.info("worker %s joined with %d slot(s)", peer.describe(), peer.slots)
        if not isinstance(peer, WorkerState) and old is not None:
            old.close()  # a client reconnecting under the same id replaces its stale session
        self._send_all(sends)

    def _detach(self, peer: WorkerState | ClientState) -> None:
        peer.close()
        sends: list[tuple[WorkerState, bytes]] = []
        failures: list[tuple[ClientState, Message]] = []
        with self._lock:
            if isinstance(peer, WorkerState):
                if self._workers.get(peer.id) is not peer:
                    return
                del self._workers[peer.id]
                sends, failures = self._requeue_locked(peer)
            elif self._clients.get(peer.id) is peer:
                del self._clients[peer.id]
                self._cancel_client_locked(peer)
        for client, message in failures:
            client.deliver(message)
        self._send_all(sends)

    # -- messages ----------------------------------------------------------------------------

    def _on_client_message(self, client: ClientState, msg: Message, batch: Batch) -> None:
        kind = msg.kind
        if kind is Kind.SUBMIT:
            self.submit_message(client, msg, batch)
        elif kind is Kind.CANCEL:
            self.cancel(client, msg.id)
        elif kind is Kind.STATUS:
            client.deliver(Message(Kind.STATUS_REPLY, msg.id, json.dumps(self.status()).encode(),
                                   fmt=Format.JSON), batch)
        elif kind is not Kind.HEARTBEAT:
            raise ProtocolError(f"a client may not send {kind.name}")

    def _on_worker_message(self, worker: WorkerState, msg: Message, batch: Batch) -> None:
        kind = msg.kind
        if kind is Kind.RESULT or kind is Kind.FAILURE:
            self._complete(worker, msg, batch)
        elif kind is Kind.STARTED:
            worker.note_started(msg.id)
        elif kind is not Kind.HEARTBEAT:
            raise ProtocolError(f"a worker may not send {kind.name}")

    def submit_message(self, client: ClientState, msg: Message, batch: Batch | None = None) -> None:
        """Queue a SUBMIT from ``client`` (remote or in-process) and dispatch what can go.

        ``batch`` collects the resulting sends (a reader handling a burst); without one they
        leave at once (an in-process client's call).
        """
        headers = msg.headers
        task = Task(number=next(self._numbers), owner=client, client_id=msg.id, body=msg.body,
                    fmt=msg.fmt, codec=msg.codec, priority=int(headers.get("priority", 0)))
        with self._lock:
            self.counts["submitted"] += 1
            self._tasks[task.number] = task
            client.tasks[msg.id] = task
            heapq.heappush(self._queue, (-task.priority, next(self._order), task.number))
            sends = self._dispatch_locked()
        self._send_all(sends, batch)

    def cancel(self, client: ClientState, client_id: int) -> bool:
        """Drop a queued task of ``client``; a running one finishes and its result is ignored."""
        with self._lock:
            task = client.tasks.pop(client_id, None)
            if task is None:
                return False
            if task.state is TaskState.QUEUED:
                self._forget_locked(task, TaskState.CANCELLED)
                return True
            task.owner = None
            return False

    def _complete(self, worker: WorkerState, msg: Message, batch: Batch) -> None:
        with self._lock:
            task = self._tasks.get(msg.id)
            worker.finish(msg.id, time.monotonic())
            if task is None or task.state is not TaskState.RUNNING:
                self.counts["duplicates"] += 1
                task = None
            else:
                if task.worker is not None and task.worker is not worker:
                    task.worker.inflight.pop(task.number, None)
                self._forget_locked(task, TaskState.DONE)
                self.counts["done" if msg.kind is Kind.RESULT else "failed"] += 1
                owner = task.owner
                if owner is not None:
                    owner.tasks.pop(task.client_id, None)
            sends = self._dispatch_locked()
        if task is not None and owner is not None:
            owner.deliver(Message(msg.kind, task.client_id, msg.body, fmt=msg.fmt, codec=msg.codec),
                          batch)
        self._send_all(sends, batch)

    # -- the queue (all *_locked methods run under self._lock) -------------------------------

    def _forget_locked(self, task: Task, state: TaskState) -> None:
        task.state = state
        self._tasks.pop(task.number, None)
        if state is TaskState.CANCELLED:
            self.counts["cancelled"] += 1

    def _dispatch_locked(self) -> list[tuple[WorkerState, bytes]]:
        sends = []
        queue = self._queue
        while queue:
            worker = self._choose_worker_locked()
            if worker is None:
                break
            _, _, number = heapq.heappop(queue)
            task = self._tasks.get(number)
            if task is None or task.state is not TaskState.QUEUED:
                continue  # cancelled while queued
            task.state = TaskState.RUNNING
            task.worker = worker
            worker.lease(task)
            sends.append((worker, encode(Message(Kind.TASK, number, task.body, fmt=task.fmt,
                                                 codec=task.codec))))
        return sends

    def _choose_worker_locked(self) -> WorkerState | None:
        best = None
        best_load = None
        for worker in self._workers.values():
            free = worker.capacity - len(worker.inflight)
            if free <= 0:
                continue
            load = len(worker.inflight) / worker.slots
            if best_load is None or load < best_load:
                best, best_load = worker, load
        return best

    def _requeue_locked(self, worker: WorkerState) -> tuple[list[tuple[WorkerState, bytes]],
                                                            list[tuple[ClientState, Message]]]:
        """Take back a lost worker's leases. Returns the sends to make and the failures to
        deliver, both *outside* the lock (a delivery may run a client's callbacks)."""
        self.counts["workers_lost"] += 1
        failures = []
        for task in list(worker.inflight.values()):
            if task.state is not TaskState.RUNNING or task.worker is not worker:
                continue
            task.losses += 1
            task.worker = None
            if task.losses >= self.max_losses:
                self._forget_locked(task, TaskState.DONE)
                self.counts["failed"] += 1
                if task.owner is not None:
                    task.owner.tasks.pop(task.client_id, None)
                    failures.append((task.owner, _failure(
                        task.client_id, "WorkerLost",
                        f"task lost {task.losses} workers (the last: {worker.name}); giving up")))
                continue
            task.state = TaskState.QUEUED
            self.counts["requeued"] += 1
            heapq.heappush(self._queue, (-task.priority, next(self._front), task.number))
        if worker.inflight and not self._closed.is_set():
            log.warning("%s lost with %d task(s) in flight; requeued", worker.describe(),
                        len(worker.inflight))
        worker.inflight.clear()
        return self._dispatch_locked(), failures

    def _cancel_client_locked(self, client: ClientState) -> None:
        for task in list(client.tasks.values()):
            if task.state is TaskState.QUEUED:
                self._forget_locked(task, TaskState.CANCELLED)
            else:
                task.owner = None
        client.tasks.clear()

    @staticmethod
    def _send_all(sends: list[tuple[WorkerState, bytes]], batch: Batch | None = None) -> None:
        if batch is not None:
            for worker, data in sends:
                batch.add(worker.outbox, data)
        else:
            for worker, data in sends:
                worker.outbox.put(data)

    # -- heartbeats and status ---------------------------------------------------------------

    def _tick(self) -> None:
        beat = encode(Message(Kind.HEARTBEAT))
        while not self._closed.wait(self.heartbeat / 2):
            now = time.monotonic()
            deadline = self.heartbeat * self.liveness
            with self._lock:
                peers = [*self._workers.values(), *self._clients.values()]
            for peer in peers:
                if peer.local:
                    continue
                if now - peer.last_recv > deadline:
                    log.warning("%s missed %d heartbeats; closing", peer.describe(), self.liveness)
                    peer.close()
                elif peer.outbox.stalled(now, deadline):
                    log.warning("%s stopped reading; closing", peer.describe())
                    peer.close()
                elif now - peer.outbox.last_send >= self.heartbeat:
                    peer.outbox.put(beat)

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: workers, queue depth, counts."""
        with self._lock:
            workers = [w.info() for w in self._workers.values()]
            running = sum(len(w.inflight) for w in self._workers.values())
            queued = sum(1 for t in self._tasks.values() if t.state is TaskState.QUEUED)
            clients = len(self._clients)
            counts = dict(self.counts)
        return {
            "urls": self.urls,
            "uptime": round(time.time() - self._started, 3),
            "workers": workers,
            "slots": sum(w["slots"] for w in workers),
            "clients": clients,
            "queued": queued,
            "running": running,
            **counts,
        }

    # -- in-process clients ------------------------------------------------------------------

    def attach_local(self, client: ClientState) -> None:
        """Register an in-process client (see :class:`minipool.client.LocalClient`)."""
        self._attach(client)

    def detach_local(self, client: ClientState) -> None:
        self._detach(client)


def _failure(client_id: int, kind: str, message: str) -> Message:
    """A FAILURE the coordinator makes itself: JSON, so clients need not trust a pickle for it."""
    body = json.dumps({"type": kind, "message": message}).encode()
    return Message(Kind.FAILURE, client_id, body, fmt=Format.JSON)

