"""Tasks that submit tasks: :func:`current_pool`, SCOOP's futures created on the workers.

Technique: *recursive parallelism without deadlock*. In SCOOP any worker can create futures,
through the same channel the centre uses, so a computation can unfold recursively (divide and
conquer, tree search, nested maps); Dask (``get_client()``, ``secede``/``rejoin``) and Ray (a
task calling ``.remote()``) allow the same. Here a running task calls :func:`current_pool` and
gets an Executor bound to the coordinator that runs it: same key, same transport, no new
connection. Its SUBMITs travel on the worker's own connection, and the coordinator answers on
it, as if the worker's tasks were one more client (:class:`TaskClient`; at the coordinator a
:class:`~minipool.cluster.state.TaskClientState`).

Two things make it safe:

* **waiting gives the slot back.** A task that blocks on a child's future -- ``result()``,
  ``exception()``, ``concurrent.futures.wait`` or ``as_completed``, and so ``map``,
  ``map_unordered`` and ``map_reduce`` -- *secedes* first: the coordinator may lease its slot
  to another task, and a thread of the worker takes its place; when the wait ends it
  *rejoins* (:mod:`minipool.cluster.nesting`). So a recursion deeper than the number of slots
  still completes, where ``ProcessPoolExecutor`` deadlocks once every worker waits.
* **a parent's children end with it.** The children are the worker's tasks' client's, so when
  the worker is lost, the coordinator cancels those still queued (a client gone: nobody would
  read their outcomes) and lets those running finish; the parent runs again elsewhere and
  submits its children afresh (docs/failures.md).

What makes it fast: **children are kept** (:mod:`minipool.cluster.stealing`). A child goes
through the coordinator only when it is worth it: it stays in the worker, and its parent, when
it waits on it, runs it as a call (fork/join's join); an idle slot elsewhere steals the oldest.
:class:`TaskClient` decides, as the submit passes through it, and is the one place a kept
child is run, submitted or cancelled. ``current_pool(keep_children=False)`` turns it off.

A kept child whose arguments nobody can change (numbers, strings, bytes, tuples of them) is
kept as the call itself, and pickled only if it leaves the worker: run by its parent, it costs
a function call and a future, not a pickling round trip. Arguments that could change are
pickled at submit, as for any task, so a child never sees what its parent does to them after.
How a wait on a child is seen, and turned into a join or a secede, is
:mod:`minipool.childfutures`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copyreg
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import mapping, shipping
from . import task as tasklib
from .asyncresult import TaskFunction
from .childfutures import SETTLED, ChildFuture, OutcomeFuture
from .cluster.nesting import Nest, RunningTask, current_task
from .cluster.stealing import PUBLISH_AFTER, Kept, KeptChildren
from .errors import ConnectionClosed
from .executor import ClientExecutor
from .futures import TaskFuture
from .futuretable import Client
from .wire import HEADROOM, Format, Kind, Message, encode, envelope_size

__all__ = ["current_pool", "TaskPool", "TaskClient", "ChildFuture", "OutcomeFuture", "KEEP_AS_CALL"]

_made = threading.Lock()  # one TaskClient per worker, however many tasks ask at once


def current_pool(keep_children: bool = True) -> TaskPool:
    """The pool the calling task runs in: an Executor bound to its coordinator.

    Args:
        keep_children: keep the children submitted through it in this worker, for this task
            to run when it waits on them, unless an idle slot steals them (the default,
            :mod:`minipool.cluster.stealing`); False sends every one to the coordinator, as
            SCOOP does (each then costs a round trip, and waiting on it gives the slot back).

    Raises:
        RuntimeError: not called from a task running on a minipool worker.
    """
    task = current_task()
    if task is None:
        raise RuntimeError(
            "minipool.current_pool() works only inside a task running on a minipool worker "
            "(and in the task's own thread); outside one, use the Pool you created"
        )
    if not keep_children:
        return TaskPool(_client_of(task.nest), task.codec, keep_children=False)
    pool = task.pool
    if pool is None or pool._shutdown:  # one per task: a recursion asks at every call
        pool = task.pool = TaskPool(_client_of(task.nest), task.codec)
    return pool


def _client_of(nest: Nest) -> TaskClient:
    worker = nest.worker
    with _made:
        if worker.tasks_client is None:
            worker.tasks_client = TaskClient(nest)
        return worker.tasks_client


class TaskClient(Client):
    """The client of a worker's tasks, on the worker's connection (one per worker process).

    Its id is the worker process's incarnation, so after a reconnect it resubmits what is
    unanswered under the same keys, and the coordinator runs none of it twice.
    """

    future_type = ChildFuture

    def __init__(self, nest: Nest) -> None:
        super().__init__()
        self._nest = nest
        self.client_id = nest.worker.incarnation
        self.max_message = nest.worker.max_message
        self._unanswered: dict[int, Message] = {}
        self.children = KeptChildren()  # kept here, for their parents to run (work stealing)
        self._kept_now = threading.local()  # the child this thread's submit just kept

    def _remember(self, number: int, message: Message) -> None:
        # Called under the table's lock, before _send: a child kept is never sent, so it is not
        # remembered for a resubmission either (it would run twice).
        task = current_task()
        if task is not None and not getattr(self._kept_now, "through", False) and _keepable(message.headers):
            if task.lend:  # a slot was idle when this task was leased: this child is its work
                task.lend -= 1
                self._kept_now.urgent = True
            elif self.children.keep(number, task, message=message):
                self._kept_now.task = task
                return
            else:  # a steal request stands: an idle slot waits for this child
                self._kept_now.urgent = True
        self._unanswered[number] = message

    def _take(self, number: int) -> Any:
        with self._lock:
            self._unanswered.pop(number, None)
            return self._pending.pop(number, None)

    def _send(self, message: Message) -> None:
        submit = message.kind is Kind.SUBMIT
        flush = not submit
        if submit:
            now = self._kept_now
            if (task := getattr(now, "task", None)) is not None:
                now.task = None
                if not task.holding:
                    self._nest.hold(task)
                return
            if getattr(now, "urgent", False):  # an idle slot waits for it: not held for a batch
                now.urgent, flush = False, True
        if not self._nest.send(encode(message), flush=flush) and not submit:
            raise ConnectionClosed("the worker has no connection to its coordinator now")

    def request(
        self,
        kind: Kind,
        headers: dict[str, Any] | None = None,
        timeout: float | None = 10.0,
        body: bytes = b"",
    ) -> Any:
        # The answer comes on the connection this task's thread may be the reader of.
        task = current_task()
        if task is None:
            return super().request(kind, headers, timeout, body)
        task.begin_wait()
        try:
            return super().request(kind, headers, timeout, body)
        finally:
            task.end_wait()

    def _ask_started(self, futures: list[TaskFuture], cancel: bool) -> tuple[set[int], set[int]] | None:
        return self.ask_leases(futures, cancel, 10.0)

    # -- kept children (minipool.cluster.stealing) -------------------------------------------

    @contextlib.contextmanager
    def through_coordinator(self) -> Iterator[None]:
        """Children submitted by this thread meanwhile are not kept."""
        self._kept_now.through = True
        try:
            yield
        finally:
            self._kept_now.through = False

    def keep_call(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, pool: TaskPool
    ) -> ChildFuture | None:
        """Keep a child as the call itself, to be pickled only if it leaves the worker; None if
        it is to be submitted the usual way (not from a task, to be given away now, or a
        function never packed here: packed at submit, a function that does not pickle fails
        there, as anywhere). The caller has checked that its arguments cannot change."""
        task = current_task()
        if task is None or task.lend or self.closed or self.broken or not tasklib.packs(fn):
            return None
        if getattr(self._kept_now, "through", False):
            return None
        number = next(self._numbers)
        future = ChildFuture(self, number)
        with self._lock:
            self._pending[number] = future
        call = (fn, args, kwargs, pool)
        if not self.children.keep(number, task, call=call):  # a steal request stands
            self._submit([Kept(number, task, call=call)])
        elif not task.holding:
            self._nest.hold(task)
        return future

    def join(self, future: ChildFuture) -> None:
        """``future``'s parent waits on it: run it here if it is kept; else run the children
        kept here, newest first, until it is done (it was stolen: help while waiting)."""
        kept = self.children.take(future.number)
        if kept is not None:
            self._run(kept)
            return
        if future.parent is not None:
            future.parent.touched = time.monotonic()
        while future._state not in SETTLED and (kept := self.children.newest()) is not None:
            self._run(kept)

    def _run(self, kept: Kept) -> None:
        """Run a kept child in this thread, as its worker would, and settle its future."""
        try:
            if kept.call is not None:
                fn, args, kwargs, _ = kept.call
                value, ok = fn(*args, **kwargs), True
            else:
                value, ok = tasklib.execute(kept.message.body, kept.message.codec), True
        except tasklib.Interrupted:
            raise  # the worker is stopping
        except BaseException as exc:  # noqa: BLE001 - the child's failure is its outcome, as on a worker
            value, ok = exc, False
        finally:
            self.children.ran(kept)
        future = self._take(kept.number)
        if future is None:
            return
        try:
            future.set_result(value) if ok else future.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile

    def _submit(self, kept: list[Kept]) -> None:
        """Send kept children to the coordinator as ordinary SUBMITs (remembered from now on,
        for a reconnect, like any), packing those kept as calls."""
        messages = [m for m in map(self._message, kept) if m is not None]
        with self._lock:
            messages = [m for m in messages if m.id in self._pending]
            for m in messages:
                self._unanswered[m.id] = m
        for m in messages:
            self._nest.send(encode(m))

    def _message(self, kept: Kept) -> Message | None:
        """A kept child's SUBMIT; None if its call does not pack (its future fails with why)."""
        if kept.message is not None:
            return kept.message
        fn, args, kwargs, pool = kept.call
        try:
            body, codec, needs = tasklib.pack_call(fn, args, kwargs, pool.codec, pool._init)
        except Exception as exc:  # noqa: BLE001 - as ClientExecutor.submit: the future says why
            future = self._take(kept.number)
            if future is not None:
                future.set_exception(exc)
            return None
        headers = needs or pool._init_needs
        if (
            len(body) + HEADROOM > self.max_message
            and envelope_size(len(body), codec, headers) > self.max_message
        ):
            future = self._take(kept.number)  # (a coordinator that takes less than KEEP_AS_CALL)
            if future is not None:
                self._refuse_oversized(future, body, codec, headers)
            return None
        return Message(Kind.SUBMIT, kept.number, body, fmt=Format.PICKLE, codec=codec, headers=headers)

    def submit_kept(self, numbers: tuple[int, ...]) -> None:
        """Submit those of these children that are kept (waited on with a timeout, or among
        others by ``wait``/``as_completed``)."""
        if len(self.children):
            self._submit(self.children.release(numbers=numbers))

    def give(self) -> None:
        """A STEAL: submit the oldest kept child (or the next one kept)."""
        kept = self.children.steal()
        if kept is not None:
            self._submit([kept])

    def release(self, task: RunningTask, last: bool) -> None:
        """``task`` ended: submit the children it kept and never waited on."""
        self._submit(self.children.release(owner=task))
        if last:
            self.children.forget_demand()

    def age(self, now: float) -> None:
        if len(self.children):
            self._submit(self.children.release(idle_since=now - PUBLISH_AFTER))

    def cancel(self, futures: Any) -> None:
        """Kept children are cancelled here (the coordinator never saw them); the rest there."""
        futures = list(futures)
        rest = []
        for future in futures:
            if self.children.drop(future.number) is not None and self._take(future.number) is not None:
                future.settle_cancelled()
            else:
                rest.append(future)
        if rest:
            super().cancel(rest)

    def resume(self) -> None:
        """A new connection: send again every request not answered yet."""
        with self._lock:
            again = [encode(m) for _, m in sorted(self._unanswered.items())]
        for data in again:
            self._nest.send(data)

    def lost(self, exc: BaseException) -> None:
        """The connection is gone while a task waits in the thread that would reconnect: fail
        the futures of the children that left the worker, so that it stops waiting (it raises
        ``exc``). Kept children need no connection: their parents may still run them."""
        with self._lock:
            kept = {n: f for n, f in self._pending.items() if n in self.children}
            for number in kept:
                del self._pending[number]
        self.fail_all(exc)
        with self._lock:
            self._pending.update(kept)


def _keepable(headers: dict[str, Any] | None) -> bool:
    """A child may be kept unless it has options only the coordinator applies (a priority,
    a timeout): an ``interpreter`` it needs is this worker's, which made it."""
    return headers is None or headers.keys() <= {"interpreter"}


#: Argument types whose values no one can change: a child kept with only these as arguments
#: (and tuples and frozensets of them) runs on the very objects, not on a copy.
_CONSTANT = frozenset((int, float, complex, bool, type(None)))
_SIZED = frozenset((str, bytes))
#: How large the arguments of a child kept as the call may be (a string or bytes counts its
#: length, anything else 8): a larger call is pickled at submit, where one too large for the
#: coordinator fails at once, as it would if it were stolen.
KEEP_AS_CALL = 64 * 1024


def _unchanging(values: Any, room: int = KEEP_AS_CALL, depth: int = 4) -> int:
    """What is left of ``room`` if every value is a constant (:data:`_CONSTANT`, a string or
    bytes) or a tuple or frozenset of them nested at most ``depth`` deep; else -1 (so deeper
    ones are copied, as any argument, and no recursion limit is met)."""
    for value in values:
        kind = type(value)
        if kind in _CONSTANT:
            room -= 8
        elif kind in _SIZED:
            room -= len(value)
        elif (kind is tuple or kind is frozenset) and depth:
            room = _unchanging(value, room, depth - 1)
        else:
            return -1
        if room < 0:
            return -1
    return room


class TaskPool(ClientExecutor):
    """The pool a task runs in, as that task sees it (:func:`current_pool`).

    Everything an Executor does works; its tasks use the running task's codec. It does not own
    the pool: ``shutdown`` stops this object taking tasks (and, with ``cancel_futures``,
    cancels the calling worker's children not started), and nothing else.
    """

    _client: TaskClient

    def __init__(self, client: TaskClient, codec: str, keep_children: bool = True) -> None:
        self._client = client
        self.codec = codec
        self.keep_children = keep_children
        # The running task's pool initializer travels in its children too; pinned, in case it
        # was shipped by value, to workers of this interpreter.
        self._init = tasklib.current_initializer()
        self._init_needs = None if self._init is None else {"interpreter": shipping.INTERPRETER}
        self._shutdown = False
        self._feeds = mapping.Feeds()
        self._local_slots = 0

    def future(self) -> concurrent.futures.Future:
        return OutcomeFuture()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        if self.keep_children:
            room = _unchanging(args)
            if room >= 0 and not self._shutdown and (not kwargs or _unchanging(kwargs.values(), room) >= 0):
                future = self._client.keep_call(fn, args, kwargs, self)
                if future is not None:
                    return future
            return super().submit(fn, *args, **kwargs)
        with self._client.through_coordinator():
            return super().submit(fn, *args, **kwargs)

    def submit_with(self, fn: Callable[..., Any], *args: Any, **options: Any) -> concurrent.futures.Future:
        """Never kept: its options are the coordinator's to apply, and a ``@task``'s ``.delay()``
        (which submits this way) is waited on through an :class:`OutcomeFuture` of its own."""
        with self._client.through_coordinator():
            return super().submit_with(fn, *args, **options)

    def _send(self, *args: Any, **options: Any) -> concurrent.futures.Future:
        if self.keep_children:
            return super()._send(*args, **options)
        with self._client.through_coordinator():
            return super()._send(*args, **options)

    @staticmethod
    def wait_any(futures: set[concurrent.futures.Future], timeout: float | None) -> Any:
        """``map_unordered`` waits on its futures, so that the wait gives the slot back."""
        return concurrent.futures.wait(futures, timeout, concurrent.futures.FIRST_COMPLETED)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if cancel_futures:
            self._client.cancel(self._client.task_futures())


def _bound_here(fn: Any, options: dict[str, Any]) -> TaskFunction:
    """A Celery-style task function unpickled in a task: bound to that task's pool."""
    return TaskFunction(current_pool(), fn, **options)


def _reduce_task_function(task: TaskFunction) -> tuple[Any, ...]:
    options = {
        "retries": task.retries,
        "retry_backoff": task.retry_backoff,
        "timeout": task.timeout,
        "priority": task.priority,
    }
    return _bound_here, (task.fn, options)


# A @pool.task function that travels into a task (an argument, a closure's cell) arrives bound
# to the pool that task runs in, so its .delay() works there.
copyreg.pickle(TaskFunction, _reduce_task_function)
