"""The worker's side of tasks that submit tasks: which task is running, and giving its slot back.

Technique: *secede and rejoin* (Dask's ``secede``/``rejoin``; SCOOP's futures created on the
workers). A task may submit tasks of its own and wait for them. If it held its slot while it
waited, two waiting parents would hold both slots of a two-worker pool and nothing could run
their children: a deadlock by waiting. So a task that starts to wait on its children *secedes*:
the worker tells the coordinator (WAITING), which may lease another task in its place, and puts
something in the waiting thread's place to run it. When the wait ends the task *rejoins*
(RESUMED) and takes its slot back; nothing is taken away from a task mid-run.

What stands in for a waiting thread depends on the worker's kind:

* a process worker runs tasks in the thread that reads its connection, so the waiting thread
  was its reader too: a *stand-in* thread takes over reading and running tasks, and retires
  (after its current task) once some waiting task has rejoined, then parks, to be woken by
  the next task that waits. The threads of a process share one GIL, so the slot is a lock
  (:attr:`Nest.slot`) held by the thread computing: a task that rejoins waits for the task in
  its place to end or to wait in turn, rather than take turns with it;
* a thread worker reads on a thread of its own, so it only needs room for one more task
  thread per waiting task (:class:`Turns` counts it), and a task that rejoins runs at once:
  for a while the worker runs over its slots, as Dask's does.

A task that keeps children in the worker (:mod:`minipool.cluster.stealing`) is told on by
HOLDING, and on a process worker it is owed a stand-in too, though it does not wait: someone
must read the coordinator's STEAL while it computes.

This module keeps the bookkeeping, which is plain data behind one lock: which task each thread
is running (:func:`current_task`), how many waits each task is in, and how many stand-ins are
owed or due to retire. The worker (:mod:`minipool.cluster.worker`) does the I/O.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any, Protocol

from ..errors import ConnectionClosed, MinipoolError
from ..task import Interrupted
from ..wire import Kind, Message, decode, encode

__all__ = [
    "FOR_TASKS",
    "Nest",
    "RunningTask",
    "Turns",
    "TasksClient",
    "current_task",
    "entered",
    "left",
]

#: What the coordinator sends a worker for its tasks' own requests (see minipool.nested).
FOR_TASKS = frozenset((Kind.RESULT, Kind.FAILURE, Kind.STATUS_REPLY, Kind.LOOKUP_REPLY, Kind.LEASES_REPLY))

_local = threading.local()
#: Seconds a retired stand-in waits to be called back before its thread ends.
PARK_SECONDS = 5.0
#: The GIL switch interval of a process worker while its tasks keep children: how long a
#: computing thread may keep the reader of a STEAL waiting (Python's default is 5 ms). Reading
#: and answering one takes the GIL back several times (after each system call), and every
#: time the reader waits this long: an idle slot elsewhere waits for the sum.
STEAL_SWITCH_INTERVAL = 0.00002


class TasksClient(Protocol):
    """What a worker needs of the client its tasks submit through (:mod:`minipool.nested`)."""

    def on_message(self, msg: Message) -> None: ...  # an outcome or a reply for a task's request

    def resume(self) -> None: ...  # a new connection: send again what is unanswered

    def lost(self, exc: BaseException) -> None: ...  # the connection is gone while tasks wait

    def give(self) -> None: ...  # a STEAL: submit the oldest kept child (see cluster.stealing)

    def release(self, task: RunningTask, last: bool) -> None: ...  # ``task`` ended: submit its kept

    def age(self, now: float) -> None: ...  # submit the kept children of parents idle too long


class RunningTask:
    """One task a worker is running: its number at the coordinator, and its waits."""

    __slots__ = (
        "nest",
        "number",
        "codec",
        "waits",
        "done",
        "holding",
        "touched",
        "running_kept",
        "pool",
        "lend",
    )

    def __init__(self, nest: Nest, number: int, codec: str) -> None:
        self.nest = nest  # its worker's Nest
        self.number = number
        self.codec = codec
        self.waits = 0  # waits in progress (several threads of one task may wait at once)
        self.done = False
        self.holding = False  # it keeps children in the worker (see minipool.cluster.stealing)
        self.touched = 0.0  # when it last kept or waited on a child, or ran one it kept
        self.running_kept = 0  # its kept children running now (in its threads, or helpers')
        self.pool: Any = None  # what minipool.current_pool() returns in it
        self.lend = 0  # children to submit rather than keep: slots were idle when it was leased

    def begin_wait(self) -> None:
        """A thread of this task is about to block on a child's future: secede on the first."""
        with _turns:
            if self.done:
                return
            self.waits += 1
            first = self.waits == 1
        if first:
            self.nest.secede(self)

    def end_wait(self) -> None:
        """That wait is over: rejoin when the last one ends."""
        with _turns:
            if self.done or not self.waits:
                return
            self.waits -= 1
            last = not self.waits
        if last:
            self.nest.rejoin(self)


_turns = threading.Lock()


def current_task() -> RunningTask | None:
    """The task this thread is running, or None outside a task."""
    return getattr(_local, "task", None)


def entered(task: RunningTask) -> None:
    """This thread starts running ``task`` (a thread runs one task at a time: a task that
    waits is replaced by another thread, never by another task on its own stack)."""
    _local.task = task


def left(task: RunningTask) -> None:
    """This thread is done with ``task``. A wait it never ended (an abandoned ``as_completed``)
    ends now: the slot is the task's until its outcome is sent."""
    _local.task = None
    task.done = True  # before looking at waits: a wait beginning now sees it and does nothing
    if task.waits:
        with _turns:
            waiting, task.waits = task.waits, 0
        if waiting:
            task.nest.rejoin(task)


class Turns:
    """How many threads stand in for waiting tasks: owed, due to retire, parked. Thread-safe.

    A stand-in that retires parks for a while instead of ending, and the next task to secede
    wakes it: a recursion secedes once per wait, and a thread started for each would cost more
    than many of the tasks it stands in for.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self.waiting = 0  # tasks seceded now
        self.retiring = 0  # stand-ins that should stop after their current task
        self.parked = 0  # stand-ins retired and waiting to be called back
        self.called = 0  # calls back not yet taken by a parked stand-in

    def seceded(self) -> bool:
        """A task secedes. True if a new stand-in is needed (none about to retire or parked)."""
        with self._lock:
            self.waiting += 1
            if self.retiring:
                self.retiring -= 1
                return False
            if self.parked > self.called:
                self.called += 1
                self._lock.notify()
                return False
            return True

    def rejoined(self) -> None:
        """A task rejoins: one stand-in retires after its current task."""
        with self._lock:
            self.waiting -= 1
            self.retiring += 1

    def retire(self) -> bool:
        """Asked by a stand-in between tasks: True if it should stop now."""
        with self._lock:
            if self.retiring:
                self.retiring -= 1
                return True
            return False

    def park(self, timeout: float) -> bool:
        """A retired stand-in waits to be called back: True if it was, False after ``timeout``."""
        with self._lock:
            self.parked += 1
            try:
                if not self._lock.wait_for(lambda: self.called > 0, timeout):
                    return False
                self.called -= 1
                return True
            finally:
                self.parked -= 1


class Nest:
    """A worker's tasks that submit tasks: their messages, and who stands in while they wait.

    Args:
        worker: the :class:`~minipool.cluster.worker.Worker` (its connection, its reading
            lock, its message handling, the client its tasks submit through).
    """

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.turns = Turns()
        # A thread worker's tasks wait here for its task threads (slots of them, and a stand-in
        # per waiting task): a queue of its own, so that a task queued behind two waiting
        # parents is taken by the thread that stands in for one of them.
        self.tasks: queue.SimpleQueue[tuple[Message, str | None] | None] = queue.SimpleQueue()
        self.threads = 0  # task threads started and not ended
        self.holders: dict[int, RunningTask] = {}  # running tasks that keep children, by number
        self._threads_lock = threading.RLock()
        # A process worker's one slot: held by the thread computing a task. Its threads share
        # one GIL, so a task that rejoins waits for the one in its place to end (or to wait in
        # turn) rather than run beside it: two computing threads would only take turns.
        self.slot: threading.Lock | None = threading.Lock() if worker.kind == "process" else None
        self._switch_interval: float | None = None  # the GIL's, while tasks hold (see hold)

    def enter(self, task: RunningTask) -> None:
        """This thread starts running ``task``: it takes the slot."""
        entered(task)
        if self.slot is not None:
            self.slot.acquire()

    def leave(self, task: RunningTask) -> None:
        if task.holding:
            self.unhold(task)
        left(task)
        if self.slot is not None:
            self.slot.release()

    def send(self, data: bytes, flush: bool = True) -> bool:
        """Send a message for the worker's tasks; False if there is no connection (the tasks'
        client sends its requests again on the next one). ``flush=False`` holds it back for
        the next write, as the coordinator holds TASKs: a task's SUBMITs leave together when
        it waits (WAITING is flushed), when its outcome goes, or within the worker's 10 ms."""
        outbox = self.worker.current_outbox()
        if outbox is None or outbox.failed or outbox.conn.closed:
            return False
        outbox.put(data, flush=flush)
        return True

    def hold(self, task: RunningTask) -> None:
        """``task`` keeps its first child in the worker: tell the coordinator, which may now
        ask for one (STEAL) when a slot is idle, and make sure someone reads that request: a
        process worker's reader is this very thread, so a stand-in reads while it computes."""
        task.holding = True
        with self._threads_lock:
            self.holders[task.number] = task
        self.send(encode(Message(Kind.HOLDING, task.number)))
        if self.slot is not None:
            # The stand-in needs the GIL to answer; by default a computing thread keeps it for
            # 5 ms, longer than a steal is worth waiting for. Restored when no task holds.
            with self._threads_lock:
                if self._switch_interval is None and sys.getswitchinterval() > STEAL_SWITCH_INTERVAL:
                    self._switch_interval = sys.getswitchinterval()
                    sys.setswitchinterval(STEAL_SWITCH_INTERVAL)
            self._stand_in_owed()

    def unhold(self, task: RunningTask) -> None:
        """``task`` ends: its children still kept are submitted, and its reader retires."""
        with self._threads_lock:
            self.holders.pop(task.number, None)
            last = not self.holders
            if last and self._switch_interval is not None:
                sys.setswitchinterval(self._switch_interval)
                self._switch_interval = None
        client = self.worker.tasks_client
        if client is not None:
            client.release(task, last)
        if self.slot is not None:
            self.turns.rejoined()

    def secede(self, task: RunningTask) -> None:
        """``task`` waits on its children: tell the coordinator, and put a thread in its place."""
        self.send(encode(Message(Kind.WAITING, task.number)))
        self._stand_in_owed()
        if self.slot is not None:
            self.slot.release()

    def _stand_in_owed(self) -> None:
        """One more thread is owed: start one, unless one due to retire or parked serves."""
        if self.turns.seceded():
            if self.slot is not None:
                threading.Thread(target=self.stand_in, daemon=True, name="minipool-stand-in").start()
            else:
                self._start_thread(stand_in=True)

    def rejoin(self, task: RunningTask) -> None:
        self.turns.rejoined()
        # Held for the next write: until it arrives the coordinator may lease one task too
        # many here, which waits like a prefetched one; a syscall per wait costs more.
        self.send(encode(Message(Kind.RESUMED, task.number)), flush=False)
        if self.slot is not None:
            self.slot.acquire()

    def stand_in(self) -> None:
        """Read and run tasks in the place of a task waiting on its children (a process
        worker's reader was that task's thread) until some waiting task has rejoined; then
        park, and serve again if another task secedes soon."""
        worker = self.worker
        while True:
            conn, outbox = worker.current_connection()
            if conn is None or outbox is None:
                return
            try:
                while not worker.stopping and not outbox.failed and not self.turns.retire():
                    polling = outbox.has_pending
                    try:
                        with worker.reading:
                            data = conn.recv(timeout=0.0 if polling else worker.heartbeat)
                    except TimeoutError:
                        if polling:
                            outbox.flush()
                        continue
                    if not worker.handle(decode(data), outbox):
                        conn.close()
            except (MinipoolError, Interrupted):
                pass  # the connection is gone, or the worker is stopping: the main thread says why
            if conn.closed:
                if worker.tasks_client is not None:  # its waiting tasks block the reconnecting thread
                    worker.tasks_client.lost(ConnectionClosed(f"lost the connection to {worker.url}"))
                return
            if worker.stopping or not self.turns.park(PARK_SECONDS):
                return

    def queue(self, msg: Message, origin: str | None) -> None:
        """A thread worker's task: run it on a task thread (started the first time)."""
        if self.threads < self.worker.slots:
            with self._threads_lock:
                while self.threads < self.worker.slots:
                    self._start_thread(stand_in=False)
        self.tasks.put((msg, origin))

    def _start_thread(self, stand_in: bool) -> None:
        with self._threads_lock:
            self.threads += 1
            name = "minipool-stand-in" if stand_in else f"minipool-task-{self.threads}"
        threading.Thread(target=self._task_thread, args=(stand_in,), daemon=True, name=name).start()

    def _task_thread(self, stand_in: bool) -> None:
        """Run queued tasks; a stand-in ends after a task once some waiting task rejoined."""
        try:
            while (item := self.tasks.get()) is not None:
                try:
                    self.worker.run_task(*item)
                except Interrupted:
                    return
                if stand_in and self.turns.retire():
                    return
        finally:
            with self._threads_lock:
                self.threads -= 1

    def close(self) -> None:
        """End the task threads once their tasks are done; tasks not started are dropped."""
        while True:
            try:
                self.tasks.get_nowait()
            except queue.Empty:
                break
        for _ in range(self.threads):
            self.tasks.put(None)
