"""The scheduler: the coordinator's state and rules, with no sockets and no threads.

Technique: *a sans-I/O core for a task queue*. Everything the coordinator decides -- queue a
task, lease it to a worker, take leases back from a dead worker, deliver a result once, time a
task out -- is a method here that changes plain data and returns :class:`Effects`: the tasks
to send to workers, the outcomes to deliver to clients, the journal records to write; decisions,
never bytes. The coordinator's broker (:mod:`minipool.cluster.broker`) holds one lock around
these calls and performs the effects outside it, encoding every message itself. The rules can
therefore be read, and tested, without a network.

The rules:

* a task is known by its *key* ``(client id, client task number)``, so a resubmission after a
  reconnect, or a replay of the journal, never creates a second copy;
* a task is *leased* to one worker at a time; a lost worker's leases go back to the front of the
  queue, unless the task has now lost ``max_losses`` workers (it fails with ``WorkerLost``);
* the first outcome of a task wins; later ones (it ran twice) are dropped;
* only a task no worker has ever held can be cancelled: once leased it has started, and a
  client asking (:meth:`Scheduler.started`) gets that answer and the drop in one step;
* outcomes are kept in a bounded result store, so a client that reconnects, or anyone who asks
  by task id, gets them;
* the balancing policy (:mod:`minipool.cluster.balance`) picks among the workers with a free
  lease; it may answer "none", and the task waits for the next completion;
* a task that holds a function by value (its SUBMIT names the ``interpreter`` its code needs)
  goes only to a worker running that interpreter: it waits in a queue of its own, which only
  such workers read. When workers are connected and none runs that interpreter, the task fails
  at once with ``IncompatibleInterpreter`` (on submission, and for waiting tasks whenever a
  worker joins); while no worker is connected it waits, like any task. By-reference tasks never
  look at any of this.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from ..wire import Format, Kind
from .effects import Effects
from .queueing import TaskQueue
from .state import (
    ClientState,
    Outcome,
    Task,
    TaskState,
    WorkerState,
    failure_outcome,
    incompatible_outcome,
    lost_outcome,
)

__all__ = ["Scheduler", "Effects", "Outcome", "failure_outcome"]

RESULT_STORE = 10_000  #: outcomes kept for late and reconnecting clients, at most ...
RESULT_STORE_BYTES = 16 * 1024 * 1024  #: ... and at most this many bytes of outcome bodies


_LIVE = (TaskState.RUNNING, TaskState.QUEUED)

#: Worker processes whose cut-off tasks are remembered, in case the process comes back.
LEFT_BEHIND_MAX = 1024


class Scheduler(TaskQueue):
    """Queue, leases and results. Not thread-safe: the coordinator serializes calls.

    Args:
        max_losses: workers a task may lose before it fails with ``WorkerLost``.
        balance: the balancing policy's name.
        journaling: produce journal records in the effects.
    """

    def __init__(
        self, *, max_losses: int = 3, balance: str = "least-loaded", journaling: bool = False
    ) -> None:
        super().__init__(balance)
        self.max_losses = max_losses
        self.journaling = journaling
        self.next_number = 1
        self.by_key: dict[tuple[str, int], Task] = {}
        self.results: collections.OrderedDict[tuple[str, int], Outcome] = collections.OrderedDict()
        self.results_bytes = 0
        self.clients: dict[str, ClientState] = {}
        self.watchers: dict[tuple[str, int], list[tuple[ClientState, int]]] = {}
        self.counts = {
            "submitted": 0,
            "done": 0,
            "failed": 0,
            "requeued": 0,
            "cancelled": 0,
            "workers_lost": 0,
            "duplicates": 0,
            "timed_out": 0,
            "losses_forgiven": 0,
            "leases_resumed": 0,
            "waiting_peak": 0,
            "steals": 0,  # STEAL requests sent (see TaskQueue.offer_steals)
        }
        # Tasks a worker process left behind when its connection was cut, by the process's
        # incarnation, until it comes back (see worker_joined). Bounded: a process that never
        # returns (it died) is forgotten in time, and its losses stand.
        self._left_behind: collections.OrderedDict[str, list[int]] = collections.OrderedDict()

    # -- tasks -------------------------------------------------------------------------------

    def submit(
        self,
        client_id: str,
        client_task: int,
        body: bytes,
        fmt: Format,
        codec: str,
        headers: dict[str, Any] | None,
        fx: Effects,
        number: int | None = None,
        body_crc: int | None = None,
    ) -> None:
        """Accept a task (or recognise a resubmission) and dispatch what can go.
        ``body_crc``: the body's CRC-32, when the SUBMIT's check computed it."""
        key = (client_id, client_task)
        if key in self.by_key:
            return  # already queued or running: a resubmission after a reconnect
        done = self.results.get(key)
        if done is not None:  # already finished: hand the stored outcome back
            client = self.clients.get(client_id)
            if client is not None:
                fx.deliver(client, client_task, done)
            return
        if number is None:
            number = self.next_number
        if number >= self.next_number:
            self.next_number = number + 1
        if headers:
            timeout = headers.get("timeout")
            task = Task(
                number,
                client_id,
                client_task,
                body,
                fmt,
                codec,
                int(headers.get("priority", 0)),
                None if timeout is None else float(timeout),
                time.monotonic(),
            )
            needs = headers.get("interpreter")
            if needs is not None:
                task.needs = str(needs)
        else:
            task = Task(number, client_id, client_task, body, fmt, codec, 0, None, time.monotonic())
        task.body_crc = body_crc
        self.tasks[number] = task
        self.by_key[key] = task
        self.counts["submitted"] += 1
        if self.journaling:
            fx.record("submit", task, body)
        if task.needs is not None:
            self._submit_pinned(task, fx)
            return
        queue = self.queue
        if not queue:  # nothing waits ahead of it: lease it straight away if we can
            worker = self.choose()
            if worker is not None:
                self.lease(worker, task, fx)
                return
        # Otherwise it waits. No dispatch is needed: one that leaves tasks queued leaves no
        # worker the policy would take, and every change that frees a lease dispatches again.
        # (A policy that holds tasks back may change its mind as it ages what it remembers,
        # so it is asked again.)
        self.push(task, queue)
        if self.policy.holds_back:
            self.dispatch(fx)

    def _submit_pinned(self, task: Task, fx: Effects) -> None:
        """Queue a by-value task for the workers that can load it, or fail it if none could."""
        if self.workers and not self.can_run(task.needs):
            self._fail_incompatible(task, fx)
            return
        self.push(task, self.pinned_line(task.needs))  # type: ignore[arg-type]
        self.dispatch(fx)

    def _fail_incompatible(self, task: Task, fx: Effects) -> None:
        self.counts["failed"] += 1
        self._finish(task, incompatible_outcome(task, self.workers.values()), fx)

    def _fail_unrunnable(self, fx: Effects) -> None:
        """Fail the waiting by-value tasks that no connected worker can load."""
        for interpreter in [i for i in self.pinned if not self.can_run(i)]:
            for _, _, number in self.pinned.pop(interpreter):
                task = self.tasks.get(number)
                if task is not None and task.state is TaskState.QUEUED:
                    self._fail_incompatible(task, fx)

    def cancel(self, client_id: str, client_task: int, fx: Effects) -> bool:
        """Drop a task no worker has ever held; one that has started runs on.

        A task requeued after its worker was lost has started too: it may have had effects,
        and the lost worker may yet come back with its outcome.
        """
        task = self.by_key.get((client_id, client_task))
        if task is None or task.state is not TaskState.QUEUED or task.leased_at:
            return False
        self._forget(task, TaskState.CANCELLED, fx)
        return True

    def revoke(self, key: tuple[str, int], message: str, fx: Effects) -> TaskState | None:
        """End a queued or running task at an operator's word (Flower's revoke): it fails with
        a ``Revoked`` failure its client can read without a pickle, and a worker's later
        result for it counts as a duplicate. Returns the state it was in, or None if unknown.
        (The worker runs on; the dashboard restarts a supervised one to stop it.)
        """
        task = self.by_key.get(key)
        if task is None or task.state not in _LIVE:
            return None
        was = task.state
        if task.worker is not None:  # running, or waiting on its children
            task.worker.leases.pop(task.number, None) or task.worker.waiting.pop(task.number, None)
        self.counts["failed"] += 1  # a queued one's entry in line is skipped by dispatch
        self._finish(task, failure_outcome("Revoked", message), fx)
        self.dispatch(fx)
        return was

    def started(
        self, client_id: str, client_tasks: list[int], cancel: bool, fx: Effects
    ) -> tuple[list[int], list[int]]:
        """Which of a client's tasks have started (been leased to a worker, or finished); with
        ``cancel``, drop the others. Returns ``(started, cancelled)``.

        This is how a future learns it is RUNNING, and how ``Future.cancel()`` is made a
        promise: the answer and the drop happen together, under the coordinator's lock, so no
        lease can slip in between. A task unknown here (already cancelled) counts as cancelled.
        """
        started: list[int] = []
        cancelled: list[int] = []
        by_key, results = self.by_key, self.results
        for number in client_tasks:
            key = (client_id, number)
            task = by_key.get(key)
            if (task is not None and task.leased_at) or key in results:
                started.append(number)
            elif cancel:
                if task is not None:
                    self.cancel(client_id, number, fx)
                cancelled.append(number)
        return started, cancelled

    def complete(self, worker: WorkerState, outcomes: list[tuple[int, Any]], fx: Effects) -> None:
        """A burst of a worker's outcomes, ``(task number, Outcome)`` pairs; then dispatch once.
        (Anything with an Outcome's fields will do: the coordinator passes the decoded RESULT
        messages themselves, body CRC included, and the result store keeps them.)

        One call per burst, not per result: a busy worker's results arrive several per read, and
        the leases they free are refilled together (one TASK write, not one each)."""
        now = time.monotonic()
        tasks, counts, finish = self.tasks, self.counts, worker.finish
        for number, outcome in outcomes:
            finish(number, now)
            task = tasks.get(number)
            if task is None or task.state not in _LIVE:
                counts["duplicates"] += 1
                continue
            # A restored task may be completed by a worker that ran it before the restart.
            if task.worker is not None and task.worker is not worker:
                task.worker.leases.pop(number, None)
            counts["done" if outcome.kind is Kind.RESULT else "failed"] += 1
            self._finish(task, outcome, fx)
        self.dispatch(fx)

    def _finish(self, task: Task, outcome: Outcome, fx: Effects) -> None:
        key = (task.owner_id, task.client_number)
        self.running -= task.state is TaskState.RUNNING
        task.state = TaskState.DONE
        self.tasks.pop(task.number, None)
        self.by_key.pop(key, None)
        results = self.results  # the result store, as store() keeps it, inlined: the hot path
        results[key] = outcome
        self.results_bytes += len(outcome.body)
        if len(results) > RESULT_STORE or self.results_bytes > RESULT_STORE_BYTES:
            self._trim_results()
        if self.journaling:
            fx.record("done", task, outcome.body, int(outcome.kind), outcome.fmt, outcome.codec)
        client = self.clients.get(task.owner_id)
        if client is not None:
            fx.deliver(client, task.client_number, outcome)
        if self.watchers:
            for watcher, request in self.watchers.pop(key, ()):
                fx.deliver(watcher, request, outcome)

    def store(self, key: tuple[str, int], outcome: Outcome) -> None:
        """Keep an outcome for late and reconnecting clients; the oldest go past RESULT_STORE
        outcomes or RESULT_STORE_BYTES bytes (the newest one always stays)."""
        old = self.results.pop(key, None)
        if old is not None:
            self.results_bytes -= len(old.body)
        self.results[key] = outcome
        self.results_bytes += len(outcome.body)
        self._trim_results()

    def _trim_results(self) -> None:
        results = self.results
        while len(results) > 1 and (len(results) > RESULT_STORE or self.results_bytes > RESULT_STORE_BYTES):
            self.results_bytes -= len(results.popitem(last=False)[1].body)

    def _forget(self, task: Task, state: TaskState, fx: Effects) -> None:
        task.state = state
        self.tasks.pop(task.number, None)
        self.by_key.pop(task.key, None)
        if state is TaskState.CANCELLED:
            self.counts["cancelled"] += 1
            if self.journaling:
                fx.record("forget", task, b"")

    def fetch(self, client: ClientState, task_key: tuple[str, int], request: int, fx: Effects) -> None:
        """Deliver the outcome of ``task_key`` to ``client`` now, or when it finishes."""
        done = self.results.get(task_key)
        if done is not None:
            fx.deliver(client, request, done)
        elif task_key in self.by_key:
            self.watchers.setdefault(task_key, []).append((client, request))
        else:
            fx.deliver(
                client,
                request,
                failure_outcome("KeyError", f"no task {task_key[0]}-{task_key[1]} is known here"),
            )

    # -- peers -------------------------------------------------------------------------------

    def worker_joined(self, worker: WorkerState, fx: Effects) -> None:
        """A worker connected. If its process left tasks behind when its last connection was
        cut, that was a cut, not a crash: those losses are taken back. The tasks it says it
        still holds, if they are waiting to run again, are leased back to it, not sent again:
        it is running them, or about to send their outcomes."""
        self.add_worker(worker)
        left = self._left_behind.pop(worker.incarnation, None) if worker.incarnation else None
        for number in left or ():
            task = self.tasks.get(number)
            if task is not None and task.losses:
                task.losses -= 1
                self.counts["losses_forgiven"] += 1
        for number in worker.holding:
            task = self.tasks.get(number)
            if task is not None and task.state is TaskState.QUEUED:
                # Its place in the queue stays, and dispatch skips it: it is RUNNING again.
                task.state, task.worker = TaskState.RUNNING, worker
                self.running += 1
                worker.lease(task)
                self.counts["leases_resumed"] += 1
        if self.pinned:
            self._fail_unrunnable(fx)
        self.dispatch(fx)

    def worker_lost(self, worker: WorkerState, fx: Effects, reason: str | None = None) -> None:
        """Take back a lost worker's leases: requeue, or fail tasks that lost too many.

        ``reason`` says what became of the worker ("was killed by SIGKILL"), for the WorkerLost
        its tasks may fail with; without one, the coordinator's blame, if it dropped the worker.

        A loss counts against each task the worker held, for it may have killed its worker;
        a task that fails its worker ``max_losses`` times fails with WorkerLost. But a
        connection can also just be cut while the process lives on. The coordinator cannot
        tell which at once, so unless it dropped the worker itself for cause
        (``worker.blame``: silent, a message too large -- what a task that froze or overflowed
        its worker causes), the losses are remembered under the process's incarnation and
        taken back if it connects again (:meth:`worker_joined`). When its new connection has
        already arrived, no loss is counted at all.
        """
        if self.workers.get(worker.id) is not worker:
            return
        self.remove_worker(worker)
        self.policy.forget(worker.id)
        self.counts["workers_lost"] += 1
        cut = worker.blame is None and bool(worker.incarnation)
        back = cut and any(w.incarnation == worker.incarnation for w in self.workers.values())
        left: list[int] = []
        for task in worker.held():
            if task.state is not TaskState.RUNNING or task.worker is not worker:
                continue
            task.worker = None
            if back:
                self.counts["losses_forgiven"] += 1
            else:
                task.losses += 1
                if cut:
                    left.append(task.number)
                if task.losses >= self.max_losses:
                    self.counts["failed"] += 1
                    self._finish(task, lost_outcome(task, worker, reason), fx)
                    continue
            task.state = TaskState.QUEUED
            self.running -= 1
            self.counts["requeued"] += 1
            self.requeue(task)
        worker.leases.clear()
        worker.waiting.clear()
        if left:
            self._left_behind.setdefault(worker.incarnation, []).extend(left)
            self._left_behind.move_to_end(worker.incarnation)
            while len(self._left_behind) > LEFT_BEHIND_MAX:
                self._left_behind.popitem(last=False)
        self.dispatch(fx)

    def waiting(self, worker: WorkerState, number: int, fx: Effects) -> None:
        """``worker``'s task ``number`` waits on tasks it submitted: its slot is given back
        (Dask's ``secede``) and another task may be leased in its place, so that parents
        waiting on children never hold every slot. Its lease stays: lost with the worker."""
        if worker.secede(number):
            waiting = sum(len(w.waiting) for w in self.workers.values())
            self.counts["waiting_peak"] = max(self.counts["waiting_peak"], waiting)
            self.dispatch(fx)

    def resumed(self, worker: WorkerState, number: int) -> None:
        """The task runs again (Dask's ``rejoin``): it takes a slot back at once, and the
        worker may run over its slots until a task ends (nothing is taken away mid-run)."""
        worker.rejoin(number)

    def client_joined(self, client: ClientState) -> ClientState | None:
        """Register ``client``; return the stale session it replaces (a reconnect), if any."""
        old = self.clients.get(client.id)
        self.clients[client.id] = client
        return old

    def client_left(self, client: ClientState, fx: Effects) -> None:
        """A client went away: cancel its queued tasks (it resubmits them if it comes back)."""
        if self.clients.get(client.id) is not client:
            return
        del self.clients[client.id]
        for task in list(self.by_key.values()):
            if task.owner_id == client.id and task.state is TaskState.QUEUED:
                self._forget(task, TaskState.CANCELLED, fx)

    def expire_timeouts(self, now: float, grace: float, fx: Effects) -> None:
        """Fail running tasks past their timeout (plus ``grace``, the worker's chance to report
        it first: a process worker interrupts the task itself and frees its slot). A thread
        worker cannot interrupt a thread, so the task's lease is released here and the thread
        runs on; the worker's executor queues what it is sent meanwhile."""
        for worker in self.workers.values():
            for task in worker.held():
                if task.timeout is not None and now - task.leased_at > task.timeout + grace:
                    worker.finish(task.number, now)
                    self.counts["timed_out"] += 1
                    self.counts["failed"] += 1
                    self._finish(
                        task,
                        failure_outcome(
                            "TimeoutError", f"task ran longer than its timeout of {task.timeout}s"
                        ),
                        fx,
                    )
        self.dispatch(fx)
