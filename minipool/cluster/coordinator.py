"""The coordinator: a broker and a result backend in one process.

Technique: *the compute pool's pool management, fault recovery and service discovery* (seed 000
§2.1) and Celery's broker + backend (seed 002). Clients SUBMIT tasks; the coordinator queues
them, leases each to a worker with a free slot, and forwards the RESULT to the client that asked.
The rules live in the sans-I/O :class:`~minipool.cluster.scheduler.Scheduler`; what each
message does, and the one function that sends what the coordinator says, in
:class:`~minipool.cluster.broker.Broker`; this module is the I/O around them:

* **one lock, no pickle** (see :mod:`minipool.cluster.broker`): scheduler calls run under one
  lock, never across I/O, and task bodies are forwarded as opaque bytes.
* **one reader thread per connection**, blocked in ``recv``. A reader that finds a burst of
  messages handles them all and writes what they produced once (:class:`Batch`).
* **a registry with time-to-live** (seed 001; :mod:`minipool.cluster.registry`): every worker
  is an entry renewed by anything it sends; an entry that expires -- a frozen or partitioned
  worker -- is removed and its leases go back to the queue. Other services register entries of
  their own (REGISTER) and clients look them up by name (LOOKUP).
* **an optional journal** (:mod:`minipool.cluster.task_journal`): every accepted task and every
  outcome is written ahead, so a coordinator killed with SIGKILL restarts with its queue.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

from ..errors import AuthenticationError, ConnectionClosed, FrameTooLarge, MinipoolError
from ..transports.admission import Admission
from ..transports.base import DEFAULT_MAX_MESSAGE, Connection, Listener, listen
from ..transports.serving import serve_each
from ..wire import Kind, Message, decode
from .broker import Broker
from .outbox import OUTBOX_LIMIT, Batch, Link, Outbox
from .scheduler import Effects
from .session import HEARTBEAT, LIVENESS, server_handshake
from .state import ClientState, WorkerState

__all__ = ["Coordinator"]

log = logging.getLogger("minipool.coordinator")


#: Replies collected from one burst of input before they are written anyway.
BATCH_LIMIT = 256


class Coordinator(Broker):
    """Accepts clients and workers on one or more URLs and moves tasks between them.

    Args:
        authkey: the shared secret every peer must prove it holds.
        heartbeat: seconds between heartbeats.
        liveness: heartbeats a peer may miss before it is declared dead (its registry TTL).
        max_losses: workers a task may lose (die while running it) before it fails with WorkerLost.
        prefetch: tasks sent to a worker beyond its slots (default: adaptive, see state.py).
        balance: the balancing policy: least-loaded, round-robin, random or latency.
        journal: a directory for the write-ahead journal (``None``: state lives in memory only).
        fsync: the journal's fsync policy: always, everysec or no (Redis's appendfsync).
        handshake_timeout: seconds a new connection has to open and authenticate. At most
            ``admission.MAX_OPENINGS`` connections may be opening at once; one more closes
            the oldest (see :mod:`minipool.transports.admission`).
        max_backlog: bytes of results queued for a client that is not reading before it is cut
            off (Redis's client-output-buffer-limit). Workers are bounded by their prefetch.
        transport_options: passed to :func:`~minipool.transports.base.listen`.
    """

    def __init__(
        self,
        authkey: bytes,
        *,
        heartbeat: float = HEARTBEAT,
        liveness: int = LIVENESS,
        max_losses: int = 3,
        prefetch: int | None = None,
        balance: str = "least-loaded",
        journal: str | None = None,
        fsync: str = "everysec",
        handshake_timeout: float = 5.0,
        max_backlog: int = OUTBOX_LIMIT,
        **transport_options: Any,
    ) -> None:
        if not authkey:
            raise ValueError("the coordinator needs a non-empty authkey")
        super().__init__(
            heartbeat=heartbeat,
            liveness=liveness,
            max_losses=max_losses,
            balance=balance,
            journal=journal,
            fsync=fsync,
        )
        self._key = authkey
        self.prefetch = prefetch
        self.handshake_timeout = handshake_timeout
        self.max_backlog = max_backlog
        self._transport_options = transport_options
        self.max_message = int(transport_options.get("max_message", DEFAULT_MAX_MESSAGE))
        self.topics.max_message = self.max_message  # a record must fit in one message
        # Who this coordinator is, announced to every peer: a worker that comes back names the
        # tasks it still holds only to the coordinator whose task numbers they are.
        self.instance = os.urandom(8).hex()
        self._listeners: list[Listener] = []
        self._admission = Admission(server="coordinator")
        self._started = time.time()
        self._beats: queue.SimpleQueue[Effects | None] = queue.SimpleQueue()
        for target, name in ((self._tick, "minipool-ticker"), (self._beat, "minipool-heartbeats")):
            threading.Thread(target=target, daemon=True, name=name).start()

    # -- lifecycle -------------------------------------------------------------------------

    def serve(self, url: str) -> str:
        """Listen on ``url`` (e.g. ``tcp://127.0.0.1:0``) and return the URL peers should use.

        Call it several times to serve several transports at once.
        """
        # One deadline for the whole opening: the transport's own (TLS, HTTP pairing, WebSocket
        # upgrade) and minipool's authentication.
        options = {"handshake_timeout": self.handshake_timeout, **self._transport_options}
        listener = listen(url, **options)
        self._listeners.append(listener)
        threading.Thread(
            target=self._accept_loop, args=(listener,), daemon=True, name=f"minipool-accept {listener.url}"
        ).start()
        log.info("coordinator listening on %s", listener.url)
        return listener.url

    @property
    def urls(self) -> list[str]:
        return [listener.url for listener in self._listeners]

    def close(self) -> None:
        """Stop listening, drop every connection, close the journal."""
        if self.closing.is_set():
            return
        self.closing.set()
        self._beats.put(None)
        for listener in self._listeners:
            listener.close()
        with self.lock:
            peers = [*self.scheduler.workers.values(), *self.scheduler.clients.values()]
        self.stop_leasing()
        for peer in peers:
            peer.close("was closed with the coordinator")
        self.topics.close()
        if self.journal is not None:
            self.journal.close()

    def stop_leasing(self) -> None:
        """Forget every connected worker, so that nothing more is leased to them: when the
        workers are about to stop with the coordinator (a pool closing), a task whose worker
        goes first must not be started again on another that is going too."""
        with self.lock:
            self.scheduler.workers.clear()

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -----------------------------------------------------------------------

    def _accept_loop(self, listener: Listener) -> None:
        # With no thread to be had (3.12 refuses new ones while the interpreter exits, as a
        # pool waits for its pending tasks), a connection -- a worker coming up to run them --
        # is served on the accept thread, which exists already.
        serve_each(
            listener.accept,
            self._admit,
            self._serve,
            stopping=self.closing.is_set,
            thread_name=lambda conn: f"minipool-peer {conn.peer}",
        )

    def _admit(self, conn: Connection) -> Connection:
        self._admission.admit(conn)  # may close the connection that has waited longest
        return conn

    def _serve(self, conn: Connection) -> None:
        try:
            hello = server_handshake(conn, self._key, self.handshake_timeout)
        except (AuthenticationError, MinipoolError, TimeoutError, OSError) as exc:
            log.warning(
                "%s %s: %s",
                "rejected" if isinstance(exc, AuthenticationError) else "dropped during handshake",
                conn.peer,
                exc,
            )
            self.refuse(conn, str(exc), authentication=isinstance(exc, AuthenticationError))
            return
        finally:
            self._admission.opened(conn)
        role = hello.get("role")
        try:
            if role == "worker":
                peer: WorkerState | ClientState = WorkerState.from_hello(
                    Link(conn, Outbox(conn)), hello, self.prefetch, self.instance
                )
            elif role == "client":  # a client that stops reading must block no one: a writer
                peer = ClientState.from_hello(Link(conn, Outbox(conn, self.max_backlog, writer=True)), hello)
            else:
                raise ValueError(f"unknown role {role!r}")
        except (TypeError, ValueError) as exc:  # an authenticated peer can still be buggy
            log.warning("dropped %s: malformed HELLO: %s", conn.peer, exc)
            self.refuse(conn, f"malformed HELLO: {exc}")
            return
        # Tell the peer our heartbeat, so both sides time each other out alike, and the largest
        # message we accept, so it fails an oversized task itself (see adopt_heartbeat).
        announce: dict[str, Any] = {
            "interval": self.heartbeat,
            "liveness": self.liveness,
            "max_message": self.max_message,
            "coordinator": self.instance,
        }
        if isinstance(peer, WorkerState) and peer.holding:
            # Of the tasks a returning worker holds, the ones still unfinished here: it sends
            # the outcomes it kept for those only, not for tasks already done.
            with self.lock:
                announce["wanted"] = [n for n in peer.holding if n in self.scheduler.tasks]
        fx = Effects()
        fx.reply(peer, Message(Kind.HEARTBEAT, headers=announce))
        self.apply(fx)
        self.attach(peer)
        try:
            self._read_loop(peer)
        finally:
            self.detach(peer)

    def _read_loop(self, peer: WorkerState | ClientState) -> None:
        conn, outbox = peer.link.conn, peer.link.outbox
        handle = self.handle_client_message
        worker = peer if isinstance(peer, WorkerState) else None
        batch = Batch()
        while True:
            # While replies (or TASKs held back for this worker) are waiting, only poll: handle
            # the whole burst, then write once, before blocking.
            waiting = batch.count or (worker is not None and outbox.has_pending)
            try:
                data = conn.recv(timeout=0.0 if waiting else None)
            except TimeoutError:
                batch.flush()
                if worker is not None:
                    outbox.flush()  # prefetched tasks held back while it was busy
                continue
            except ConnectionClosed:
                batch.flush()
                return
            except MinipoolError as exc:  # FrameTooLarge, ProtocolError from the transport
                log.warning("closing %s: %s", peer.describe(), exc)
                if worker is not None and isinstance(exc, FrameTooLarge):
                    worker.blame = str(exc)  # a task's result, perhaps: it would do it again
                peer.close(f"was dropped for a message that broke the protocol: {exc}")
                self.refuse(conn, str(exc))
                return
            peer.last_recv = time.monotonic()
            try:
                if worker is not None:
                    burst, trouble = self._burst(conn, data)
                    self.on_worker_burst(worker, burst, batch)
                    if trouble is not None:  # after the results that came before it
                        raise trouble
                else:
                    handle(peer, decode(data), batch)  # type: ignore[arg-type]  # a ClientState
            except ConnectionClosed:
                batch.flush()
                return
            except MinipoolError as exc:
                batch.flush()
                log.warning("closing %s: %s", peer.describe(), exc)
                peer.close(f"was dropped for a malformed message: {exc}")
                self.refuse(conn, str(exc))
                return
            if batch.count >= BATCH_LIMIT:
                batch.flush()

    @staticmethod
    def _burst(conn: Connection, first: bytes) -> tuple[list[Message], MinipoolError | None]:
        """``first`` and every further message already waiting (up to BATCH_LIMIT), decoded,
        and the error that cut the burst short, if one did: what came before it still counts
        (a worker's last results, then its connection closing, are results)."""
        burst = [decode(first)]
        try:
            for data in conn.recv_ready(BATCH_LIMIT - 1):
                burst.append(decode(data))
        except MinipoolError as exc:
            return burst, exc
        return burst, None

    # -- the clock: heartbeats, registry expiry, timeouts --------------------------------------

    def _beat(self) -> None:
        """Send the heartbeats the ticker found due. A separate thread: a send to a peer that
        has stopped reading may block, and the ticker must stay free to notice and close it."""
        while True:
            beats = self._beats.get()
            if beats is None:
                return
            self.apply(beats)

    def _tick(self) -> None:
        while not self.closing.wait(self.heartbeat / 2):
            now = time.monotonic()
            deadline = self.heartbeat * self.liveness
            fx = Effects()
            with self.lock:
                workers = list(self.scheduler.workers.values())
                clients = list(self.scheduler.clients.values())
                for worker in workers:  # anything a worker sent renews its entry
                    if now - worker.last_recv < deadline:
                        self.registry.renew(worker.id)
                expired = {entry.key for entry in self.registry.expire()}
                self.scheduler.expire_timeouts(now, self.heartbeat, fx)
            self.apply(fx)
            peers: list[WorkerState | ClientState] = [*workers, *clients]
            beats = Effects()
            for peer in peers:
                if peer.local:
                    continue
                if peer.id in expired or (
                    not isinstance(peer, WorkerState) and now - peer.last_recv > deadline
                ):
                    self._drop(peer, f"was silent for {now - peer.last_recv:.1f}s (no heartbeat)")
                elif peer.link.outbox.stalled(now, deadline):
                    self._drop(peer, f"stopped reading for {deadline:.1f}s")
                elif now - peer.link.outbox.last_send >= self.heartbeat:
                    beats.heartbeat(peer)
            if beats:
                self._beats.put(beats)
            if self.journal is not None:
                self.journal.maybe_snapshot(self.lock, self.scheduler)

    @staticmethod
    def _drop(peer: WorkerState | ClientState, why: str) -> None:
        """Close a peer that stopped heartbeating or reading. A worker is blamed: a task that
        froze its process does this, and would do it again wherever it ran."""
        log.warning("%s %s; closing", peer.describe(), why)
        if isinstance(peer, WorkerState):
            peer.blame = why
        peer.close(why)

    def status(self) -> dict[str, Any]:
        """:meth:`Broker.status`, with the URLs served and the uptime."""
        report = super().status()
        report["urls"] = self.urls
        report["uptime"] = round(time.time() - self._started, 3)
        return report

    def load(self) -> tuple[int, float, list[WorkerState]]:
        """Tasks waiting, the longest wait, and the workers (what autoscaling looks at).

        A task prefetched by a busy worker is waiting too, even though it has left the queue.
        """
        now = time.monotonic()
        with self.lock:
            scheduler = self.scheduler
            count = scheduler.queued  # kept by the state changes: no walk over the tasks
            # The longest wait is that of a priority's first task in some line: no walk.
            lines = [scheduler.queue, *scheduler.pinned.values()]
            waiting = [task for line in lines for task in scheduler.heads(line)]
            for worker in scheduler.workers.values():
                if worker.inflight > worker.slots:
                    prefetched = sorted(worker.leases.values(), key=lambda t: t.leased_at)[worker.slots :]
                    count += len(prefetched)
                    waiting += prefetched
            workers = list(scheduler.workers.values())
        oldest = max((now - t.submitted_at for t in waiting), default=0.0)
        return count, oldest, workers
