"""The worker: connect to a coordinator, advertise slots, run tasks, send results back.

Technique: *the worker side of a task queue* (Celery's worker, SCOOP's worker process) with the
Paranoid Pirate pattern's reconnect. A worker is a loop: receive a TASK, run it, send a RESULT.
Around that loop:

* **slots.** ``kind="process"`` with one slot runs tasks in the worker's own main thread: the
  process *is* the executor, so there is no extra hop (this is what ``Pool`` starts, one per
  core). ``kind="thread"`` runs up to ``slots`` tasks at once on task threads fed by a queue
  (:class:`~minipool.cluster.nesting.Nest`), for I/O-bound work. Several process slots
  are several single-slot worker processes (see :mod:`minipool.cluster.supervisor`), so a task
  that crashes its process takes down one slot, not all of them.
* **heartbeats.** A thread sends HEARTBEAT whenever the worker has been quiet for one interval,
  even while a long task holds the main thread; the worker declares the coordinator dead after
  ``liveness`` intervals of silence while it is waiting for work.
* **reconnect with exponential backoff** (0.1 s, 0.2 s, 0.4 s, ... up to ``max_backoff``, with
  jitter so a restarted coordinator is not hit by every worker in the same millisecond). A wrong
  key, an unknown URL scheme or a missing extra is not retried: it will not get better. The
  first failure is logged as a warning, then one warning per ``RETRY_REPORT`` seconds says the
  worker is still trying (each attempt is logged at INFO): never silent, never a flood.
* **stopping.** Everything a task raises, ``SystemExit`` and ``KeyboardInterrupt`` included, is
  that task's outcome, and the worker goes on. A worker that owns its process
  (:meth:`Worker.handle_signals`, as ``python -m minipool worker`` does) stops promptly on
  SIGTERM or SIGINT even in the middle of a task: the signal raises
  :class:`~minipool.task.Interrupted` inside the task, whose ``finally`` blocks run, and a
  backstop timer ends the process if the task swallows it. Such a worker that will not reconnect
  also stops mid-task when its coordinator is gone: the result could reach no one.
"""

from __future__ import annotations

import collections
import logging
import os
import platform
import signal
import socket
import threading
import time
from typing import Any

from .. import shipping
from .. import task as tasklib
from ..errors import (
    AuthenticationError,
    MessageTooLarge,
    MinipoolError,
    MissingExtra,
    ProtocolError,
    TransportError,
)
from ..transports.base import DEFAULT_MAX_MESSAGE, Connection
from ..wire import HEADROOM, Format, Kind, Message, decode, encode, encode_parts, envelope_size
from .nesting import FOR_TASKS, Nest, RunningTask, TasksClient
from .outbox import Outbox
from .session import HEARTBEAT, LIVENESS, Backoff, Lost, adopt_heartbeat, open_connection, read_until_lost
from .timelimit import execute_within

__all__ = ["Worker"]

log = logging.getLogger("minipool.worker")

FLUSH_INTERVAL = 0.01  # seconds a finished result may wait for the rest of its batch
FLUSH_BYTES = 256 * 1024
RETRY_REPORT = 60.0  # seconds between warnings that the coordinator still cannot be reached
#: Seconds a worker told to stop has to get out of its task before the process is ended anyway.
STOP_GRACE = 2.0
#: Outcomes kept after sending, to send again if the connection turns out to have been dead
#: (the last RECENT_MAX, each of at most RECENT_ITEM bytes: 4 MiB in all at most).
RECENT_MAX = 128
RECENT_ITEM = 32 * 1024


class Worker:
    """A worker process's connection to one coordinator.

    Args:
        url: the coordinator's URL.
        authkey: the shared key.
        slots: tasks run at once.
        kind: ``"process"`` (run in this process's main thread; slots must be 1) or ``"thread"``.
        name: shown in ``status``; defaults to ``host:pid``.
        reconnect: reconnect when the coordinator goes away (``False``: return from :meth:`run`).
        max_backoff: longest wait between reconnection attempts, in seconds.
        slowdown: make every task take this many times as long (a sleep after it), to stand
            in for a slower machine: ``python -m minipool.bench balance`` and the balancing
            demonstrations in docs/cluster.md use it. 1.0, the default, changes nothing.
    """

    def __init__(
        self,
        url: str,
        authkey: bytes,
        *,
        slots: int = 1,
        kind: str = "process",
        name: str | None = None,
        heartbeat: float = HEARTBEAT,
        liveness: int = LIVENESS,
        reconnect: bool = True,
        max_backoff: float = 30.0,
        services: tuple[str, ...] = (),
        slowdown: float = 1.0,
        **transport_options: Any,
    ) -> None:
        if kind not in ("process", "thread"):
            raise ValueError(f"kind must be 'process' or 'thread', not {kind!r}")
        if kind == "process" and slots != 1:
            raise ValueError("a process worker has one slot; start several (see Supervisor)")
        self.url = url
        self._key = authkey
        self.slots = slots
        self.kind = kind
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self._options = transport_options
        # The largest message the coordinator accepts: our own until it announces its own.
        self.max_message = int(transport_options.get("max_message", DEFAULT_MAX_MESSAGE))
        self._stop = threading.Event()
        self._conn: Connection | None = None
        self.services = tuple(services) or ("default",)
        self.slowdown = slowdown
        self._threaded = kind == "thread"  # tasks run on task threads (see Nest), not inline
        self._inline_task = False  # the main thread is inside a task (a signal may interrupt it)
        self._owns_process = False  # handle_signals was called: stopping may end the process
        self.tasks_done = 0
        # Who this process is, across reconnects (a restarted process draws a new one): a cut
        # from which the same incarnation comes back is not held against its tasks.
        self.incarnation = os.urandom(8).hex()
        # The tasks of the coordinator we serve (known by the id it announces): numbers
        # received and not finished, and outcomes finished while no connection could take
        # them. The next HELLO names them, and the outcomes go out on the next connection to
        # the same coordinator; another coordinator's task numbers mean other tasks.
        self._coordinator: str | None = None
        self._outbox: Outbox | None = None  # where outcomes go; None between connections
        self._running: set[int] = set()
        self._undelivered: dict[int, bytes] = {}
        # The last outcomes handed to the current connection: a write into a connection the
        # other end has already closed succeeds, and is lost. When the connection goes, these
        # are sent again on the next (the coordinator drops the copies it already has).
        self._recent: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=RECENT_MAX)
        self._held = threading.Lock()
        # Tasks that submit tasks (see minipool.cluster.nesting): the client they submit
        # through (made by minipool.nested on first use), who may read the connection, and
        # the threads standing in for tasks that wait on their children.
        self.tasks_client: TasksClient | None = None
        self.reading = threading.Lock()
        self.nest = Nest(self)

    def hello(self) -> dict[str, Any]:
        hello = {
            "role": "worker",
            "name": self.name,
            "slots": self.slots,
            "kind": self.kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "incarnation": self.incarnation,
            "python": platform.python_version(),
            "interpreter": shipping.INTERPRETER,
            "services": list(self.services),
        }
        with self._held:
            if self._coordinator is not None:
                hello["coordinator"] = self._coordinator
                hello["holding"] = sorted(self._running.union(self._undelivered))
        return hello

    def run(self) -> None:
        """Serve until :meth:`stop` (or, without ``reconnect``, until the coordinator goes away).

        Raises:
            AuthenticationError: the coordinator refused our key.
            TransportError: the URL is malformed, its scheme unknown, or TLS has no context.
            MissingExtra: the URL's transport needs a package that is not installed.
        """
        backoff = Backoff(0.1, self.max_backoff)
        failures, failing_since, next_report = 0, 0.0, 0.0
        try:
            while not self._stop.is_set():
                try:
                    conn = open_connection(self.url, self._key, self.hello(), **self._options)
                except (AuthenticationError, TransportError, MissingExtra):
                    raise
                except (MinipoolError, OSError, TimeoutError) as exc:
                    if not self.reconnect:
                        raise
                    now = time.monotonic()
                    if not failures:
                        failing_since = next_report = now
                    failures += 1
                    wait = backoff.next()
                    if now >= next_report:
                        next_report = now + RETRY_REPORT
                        log.warning(
                            "worker %s cannot reach %s (%s); %s",
                            self.name,
                            self.url,
                            exc,
                            "retrying"
                            if failures == 1
                            else f"{failures} attempts in {now - failing_since:.0f}s, still trying",
                        )
                    else:
                        log.info("cannot reach %s (%s); retrying in %.1fs", self.url, exc, wait)
                    self._stop.wait(wait)
                    continue
                backoff.reset()
                log.log(
                    logging.WARNING if failures else logging.INFO,
                    "worker %s connected to %s%s",
                    self.name,
                    self.url,
                    f" after {failures} failed attempt(s)" if failures else "",
                )
                failures = 0
                self._serve(conn)
                if not self.reconnect:
                    return
        except tasklib.Interrupted:
            return  # told to stop in the middle of a task: its lease goes back to the queue
        finally:
            if self._threaded:
                self.nest.close()  # tasks not started are dropped: their leases go back
                if self._owns_process:  # its threads' results can reach no one: do not wait long
                    self._arm_backstop(0)

    def stop(self) -> None:
        """Ask :meth:`run` to return; drops the current connection.

        Safe from a signal handler: the connection is closed by a short-lived thread, never in
        the caller, because the caller may be the very thread blocked reading it (a handler
        runs on the main thread, between two bytecodes of its ``recv``).
        """
        self._stop.set()
        conn = self._conn
        if conn is not None:
            threading.Thread(target=conn.close, daemon=True, name="minipool-worker-stop").start()

    def handle_signals(self) -> None:
        """Make SIGTERM and SIGINT stop this worker at once, even in the middle of a task (call
        it from the main thread of a process that exists to run this worker)."""
        self._owns_process = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop()
        self._arm_backstop(128 + signum)
        if self._inline_task:
            self._inline_task = False
            raise tasklib.Interrupted(f"worker stopped by {signal.Signals(signum).name}")

    @staticmethod
    def _arm_backstop(status: int) -> None:
        """End the process after STOP_GRACE seconds, whatever it is doing then: a task that
        swallows Interrupted, or a thread task the interpreter would wait for, cannot hold it."""
        backstop = threading.Timer(STOP_GRACE, os._exit, (status,))
        backstop.daemon = True
        backstop.start()

    # -- one connection ----------------------------------------------------------------------

    def _serve(self, conn: Connection) -> None:
        self._conn = conn
        outbox = Outbox(conn)
        beating = threading.Thread(
            target=self._beat, args=(outbox,), daemon=True, name="minipool-worker-heartbeat"
        )
        beating.start()

        def on_message(msg: Message) -> None:
            if self._stop.is_set() or (outbox.failed and not self.reconnect):
                # Stopping, or tasks still buffered here have no one to send their results to.
                raise Lost("stopped", closed=True)
            self.handle(msg, outbox)

        try:
            # Heartbeats come from the thread above: this one may be running a task for minutes.
            # It reads under ``reading``: while its task waits on children, a stand-in reads.
            lost = read_until_lost(
                self, conn, outbox, on_message, beats=False, poll_held=True, guard=self.reading
            )
            if not (isinstance(lost, Lost) and lost.closed):
                log.warning("dropping the connection to %s: %s", self.url, lost)
        finally:
            conn.close()
            self._suspend(outbox)

    def handle(self, msg: Message, outbox: Outbox) -> bool:
        """Act on one message from the coordinator; False if it closed the connection."""
        if msg.kind is Kind.TASK:
            self._running.add(msg.id)
            self._start(msg, self._coordinator)
        elif msg.kind is Kind.HEARTBEAT and msg.headers:
            adopt_heartbeat(self, msg.headers)
            self._resume(outbox, msg.headers.get("coordinator"), msg.headers.get("wanted"))
        elif msg.kind is Kind.ERROR:
            log.warning("coordinator closed the connection: %s", msg.headers.get("reason"))
            return False
        elif msg.kind in FOR_TASKS and self.tasks_client is not None:
            self.tasks_client.on_message(msg)
        elif msg.kind is Kind.STEAL:  # a slot is idle: give up a kept child (any task's here)
            if self.tasks_client is not None and self.nest.holders:
                self.tasks_client.give()
        elif msg.kind is not Kind.HEARTBEAT:  # a coordinator's kind we never receive
            raise ProtocolError(f"a worker does not expect {msg.kind.name} from the coordinator")
        return True

    def current_outbox(self) -> Outbox | None:
        """Where messages go now: None between connections."""
        with self._held:
            return self._outbox

    def current_connection(self) -> tuple[Connection | None, Outbox | None]:
        with self._held:
            return self._conn, self._outbox

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _resume(self, outbox: Outbox, coordinator: Any, wanted: Any) -> None:
        """The coordinator has announced itself on a new connection: outcomes go to ``outbox``
        from now on, starting with those kept since the last one, if it is the same coordinator
        -- those of the tasks it still ``wanted`` (the rest it has already)."""
        with self._held:
            if coordinator is None or coordinator != self._coordinator:
                self._coordinator = None if coordinator is None else str(coordinator)
                self._running.clear()
                self._undelivered.clear()
            wanted = set(wanted) if isinstance(wanted, list) else ()
            kept = [data for number, data in self._undelivered.items() if number in wanted]
            self._undelivered.clear()
            self._recent.clear()
            self._outbox = outbox
        if kept:
            log.info("sending %d result(s) finished while disconnected", len(kept))
            outbox.put_many(kept)
        if self.tasks_client is not None:
            self.tasks_client.resume()

    def _suspend(self, outbox: Outbox) -> None:
        """The connection is gone: keep the outcomes it never sent, for the next one."""
        with self._held:
            if self._outbox is outbox:
                self._outbox = None
            for number, data in self._recent:
                self._undelivered.setdefault(number, data)
            self._recent.clear()
            for data in outbox.unsent():
                msg = decode(data)
                if msg.kind is Kind.RESULT or msg.kind is Kind.FAILURE:
                    self._undelivered[msg.id] = data

    def _deliver(self, number: int, data: bytes, origin: str | None, urgent: bool = False) -> None:
        """Send a task's outcome on the current connection, or keep it until there is one."""
        with self._held:
            if origin != self._coordinator:
                return  # a coordinator we no longer serve: its task numbers mean other tasks here
            self._running.discard(number)
            outbox = self._outbox
            if outbox is None or outbox.failed or outbox.conn.closed:
                self._undelivered[number] = data
                return
            if len(data) <= RECENT_ITEM:
                self._recent.append((number, data))
        # Inline tasks defer the write (the read loop flushes when no task is waiting); tasks
        # on executor threads send at once, coalescing through the outbox under contention, and
        # so does a task whose thread cannot read next (another, standing in, is reading), or
        # may not (``urgent``: a stand-in read for it while it kept children).
        outbox.put(
            data,
            flush=urgent or self._threaded or outbox.pending_bytes > FLUSH_BYTES or self.reading.locked(),
        )

    def _beat(self, outbox: Outbox) -> None:
        """Heartbeats, and a backstop flush: a result held back for a batch is never delayed
        by more than FLUSH_INTERVAL, even if the next task in the batch runs for minutes."""
        beat = encode(Message(Kind.HEARTBEAT))
        while not outbox.failed and not outbox.conn.closed:
            time.sleep(FLUSH_INTERVAL)
            if self.nest.holders and self.tasks_client is not None:  # children kept too long
                self.tasks_client.age(time.monotonic())
            if outbox.has_pending:
                outbox.flush()
            elif time.monotonic() - outbox.last_send >= self.heartbeat:
                outbox.put(beat)
        if self._inline_task and not self.reconnect and self._owns_process and not self._stop.is_set():
            # No one can receive this task's result, and we will not reconnect to deliver it.
            log.warning("lost the coordinator at %s in the middle of a task; stopping", self.url)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # type: ignore[arg-type]

    def _start(self, msg: Message, origin: str | None) -> None:
        if self._threaded:
            self.nest.queue(msg, origin)
        else:
            self.run_task(msg, origin)

    def run_task(self, msg: Message, origin: str | None) -> None:
        """Run one task and deliver its outcome (inline, or on a task thread)."""
        timeout = msg.headers.get("timeout")
        started = time.perf_counter()
        inline = not self._threaded
        running = RunningTask(self.nest, msg.id, msg.codec)
        if msg.headers:
            running.lend = int(msg.headers.get("lend", 0))
        self.nest.enter(running)
        try:
            self._inline_task = inline
            if timeout is not None and inline:
                value = execute_within(msg.body, msg.codec, float(timeout))
            else:
                value = tasklib.execute(msg.body, msg.codec)
            ok = True
        except tasklib.Interrupted:
            raise  # the worker is stopping; the task is not over, its lease goes back
        except BaseException as exc:  # noqa: BLE001 - the task's failure is its result, SystemExit too
            ok, value = False, exc
        finally:
            self._inline_task = False
            self.nest.leave(running)
        if self.slowdown > 1.0:  # an artificially slow machine, for the balancing benchmark
            time.sleep((self.slowdown - 1.0) * (time.perf_counter() - started))
        ok, body, codec = tasklib.pack_outcome(ok, value, msg.codec)
        if len(body) + HEADROOM > self.max_message and envelope_size(len(body), codec) > self.max_message:
            # The coordinator would drop us for it, and the task would run again, as large.
            ok, body, codec = tasklib.pack_outcome(
                False,
                MessageTooLarge(
                    "the task's result" if ok else "the task's exception",
                    envelope_size(len(body), codec),
                    self.max_message,
                ),
            )
        self.tasks_done += 1
        self._deliver(
            msg.id,
            encode_parts(Kind.RESULT if ok else Kind.FAILURE, msg.id, body, Format.PICKLE, codec, None),
            origin,
            running.holding,
        )
