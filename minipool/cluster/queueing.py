"""Dispatching: which queued task goes to which worker, and when.

Technique: *a priority queue drained by a balancing policy*. Waiting tasks sit in a heap of
``(-priority, order, task number)``: the highest priority first, then first come first served,
and a task that lost its worker jumps the line (a negative order). Whenever a lease is freed, a
worker joins or a task arrives, :meth:`TaskQueue.dispatch` offers the workers with a free lease
to the balancing policy (:mod:`minipool.cluster.balance`), which picks one or answers "none",
and leases it the next task. A task that holds a function by value waits in a queue of its
own, read only by the workers running the interpreter its code needs.

This is the part of the scheduler that decides *where*; :class:`~minipool.cluster.scheduler.
Scheduler` (which extends it) decides *what becomes of a task*. Plain data, no I/O: a lease
becomes an :class:`Effects` entry, and the coordinator sends the TASK.
"""

from __future__ import annotations

import collections
import heapq
import itertools

from .balance import Policy, get_policy
from .effects import Effects
from .state import Task, TaskState, WorkerState

__all__ = ["TaskQueue"]


class TaskQueue:
    """The queues of waiting tasks and the rule that leases them to workers.

    Args:
        balance: the balancing policy's name.
    """

    def __init__(self, balance: str = "least-loaded") -> None:
        self.policy: Policy = get_policy(balance)
        self.queue: list[tuple[int, int, int]] = []  # heap of (-priority, order, task number)
        # By-value tasks, by the interpreter they need: heaps like `queue`, read only by the
        # workers running that interpreter. Empty heaps are removed, so it is falsy when idle.
        self.pinned: dict[str, list[tuple[int, int, int]]] = {}
        self.order = itertools.count()
        self._front = itertools.count(-1, -1)  # requeued tasks jump the line
        self.tasks: dict[int, Task] = {}  # live tasks by number
        # Of those, how many are RUNNING (leased), kept by each change of state, so that the
        # number queued is known without a walk: see `queued`.
        self.running = 0
        self.workers: dict[str, WorkerState] = {}
        # How many connected workers run each interpreter: whether a by-value task can run
        # anywhere is asked at every submission, and must not cost a walk over the workers.
        self._interpreters: collections.Counter[str | None] = collections.Counter()

    def add_worker(self, worker: WorkerState) -> None:
        """Count ``worker`` in (in place of a worker of the same id, if one is connected)."""
        old = self.workers.get(worker.id)
        if old is not None:
            self._interpreters[old.interpreter] -= 1
        self.workers[worker.id] = worker
        self._interpreters[worker.interpreter] += 1

    def remove_worker(self, worker: WorkerState) -> None:
        del self.workers[worker.id]
        self._interpreters[worker.interpreter] -= 1

    @property
    def queued(self) -> int:
        """Tasks waiting for a worker (state QUEUED), in O(1): the live tasks not running."""
        return len(self.tasks) - self.running

    def can_run(self, interpreter: str | None) -> bool:
        """Whether a connected worker runs ``interpreter``."""
        return self._interpreters[interpreter] > 0

    def push(self, task: Task, heap: list[tuple[int, int, int]]) -> None:
        """Put a new task at the back of ``heap`` (among those of its priority)."""
        heapq.heappush(heap, (-task.priority, next(self.order), task.number))

    def requeue(self, task: Task) -> None:
        """Put a task that lost its worker back at the front of its queue."""
        entry = (-task.priority, next(self._front), task.number)
        heapq.heappush(self.queue if task.needs is None else self.pinned.setdefault(task.needs, []), entry)

    def dispatch(self, fx: Effects) -> None:
        """Lease queued tasks to workers with a free lease, as the policy chooses.

        A task that can start at once (the worker has an idle slot) is sent *urgently*; one that
        will wait in the worker's prefetch queue may be held back a little and leave with the
        next batch (see :meth:`Outbox.put`): the worker is busy, so nothing is lost by waiting,
        and a burst of submissions costs a few writes instead of one each.
        """
        queue, pinned = self.queue, self.pinned
        if not queue and not pinned:
            return
        choose = self.policy.choose
        free = [w for w in self.workers.values() if len(w.leases) < w.capacity]
        while free and (queue or pinned):
            worker = choose(free)
            if worker is None:
                return  # the policy would rather wait for a faster worker
            heap = queue
            if pinned:  # the worker takes the first task in line that it can load
                own = pinned.get(worker.interpreter)  # type: ignore[arg-type]
                if own and (not queue or own[0] < queue[0]):
                    heap = own
                elif not queue:
                    free.remove(worker)  # nothing waits that this worker can load
                    continue
            _, _, number = heapq.heappop(heap)
            if not heap and heap is not queue:
                del pinned[worker.interpreter]  # type: ignore[arg-type]
            task = self.tasks.get(number)
            if task is None or task.state is not TaskState.QUEUED:
                continue  # cancelled or finished while queued
            self.lease(worker, task, fx)
            if len(worker.leases) >= worker.capacity:
                free.remove(worker)

    def choose(self) -> WorkerState | None:
        free = [w for w in self.workers.values() if len(w.leases) < w.capacity]
        return self.policy.choose(free) if free else None

    def lease(self, worker: WorkerState, task: Task, fx: Effects) -> None:
        task.state = TaskState.RUNNING
        self.running += 1
        task.worker = worker
        worker.lease(task)
        fx.send(worker, task, len(worker.leases) <= worker.slots)
