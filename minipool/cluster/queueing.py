"""Dispatching: which queued task goes to which worker, and when.

Technique: *a priority queue drained by a balancing policy*. Waiting tasks sit in a *line*, a
deque kept sorted by ``(-priority, order, task number)``: the highest priority first, then
first come first served, and a task that lost its worker jumps the line (a negative order).
Why a sorted deque and not a heap: nearly every task joins at the back (same priority, the
next order) and leaves from the front, and a deque does both in one step, where a heap of
twenty thousand waiting tasks sifts through fifteen levels of tuple comparisons on every pop.
The rare task that belongs in the middle (a higher priority, a requeue behind one) is placed
by bisection. Whenever a lease is freed, a
worker joins or a task arrives, :meth:`TaskQueue.dispatch` offers the workers with a free lease
to the balancing policy (:mod:`minipool.cluster.balance`), which picks one or answers "none",
and leases it the next task. A task that holds a function by value waits in a queue of its
own, read only by the workers running the interpreter its code needs.

This is the part of the scheduler that decides *where*; :class:`~minipool.cluster.scheduler.
Scheduler` (which extends it) decides *what becomes of a task*. Plain data, no I/O: a lease
becomes an :class:`Effects` entry, and the coordinator sends the TASK.
"""

from __future__ import annotations

import bisect
import collections
import itertools

from .balance import Policy, get_policy
from .effects import Effects
from .state import Task, TaskState, WorkerState

__all__ = ["Line", "TaskQueue"]

#: A line of waiting tasks: ``(-priority, order, task number)`` entries, kept sorted.
Line = collections.deque[tuple[int, int, int]]


def _join(line: Line, entry: tuple[int, int, int]) -> None:
    """Put ``entry`` in its place in ``line``: at the back or the front in one step, as almost
    every entry goes; anywhere else by bisection."""
    if not line or entry >= line[-1]:
        line.append(entry)
    elif entry <= line[0]:
        line.appendleft(entry)
    else:
        bisect.insort(line, entry)


class TaskQueue:
    """The queues of waiting tasks and the rule that leases them to workers.

    Args:
        balance: the balancing policy's name.
    """

    counts: dict[str, int]  # the scheduler's

    def __init__(self, balance: str = "least-loaded") -> None:
        self.policy: Policy = get_policy(balance)
        self.queue: Line = collections.deque()  # sorted (-priority, order, task number)
        # By-value tasks, by the interpreter they need: lines like `queue`, read only by the
        # workers running that interpreter. Empty lines are removed, so it is falsy when idle.
        self.pinned: dict[str, Line] = {}
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
        # Workers whose tasks keep children that an idle slot may steal, by id (see
        # offer_steals): empty unless tasks submit tasks, and then dispatch looks at them.
        self.lenders: dict[str, WorkerState] = {}

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

    def heads(self, line: Line) -> list[Task]:
        """The first live task of each priority in ``line``: within a priority a line keeps
        submission order, so the task that has waited longest is among these. Entries of tasks
        that left meanwhile (cancelled, revoked) are passed over, as dispatch does; the start
        of the next priority is found by bisection, so the line is never walked whole."""
        tasks, heads, i, end = self.tasks, [], 0, len(line)
        while i < end:
            rank = line[i][0]
            while i < end and line[i][0] == rank:
                task = tasks.get(line[i][2])
                if task is not None and task.state is TaskState.QUEUED:
                    heads.append(task)
                    break
                i += 1
            i = bisect.bisect_left(line, (rank + 1,), i)
        return heads

    def can_run(self, interpreter: str | None) -> bool:
        """Whether a connected worker runs ``interpreter``."""
        return self._interpreters[interpreter] > 0

    def push(self, task: Task, line: Line) -> None:
        """Put a new task at the back of ``line`` (among those of its priority)."""
        _join(line, (-task.priority, next(self.order), task.number))

    def requeue(self, task: Task) -> None:
        """Put a task that lost its worker back at the front of its queue."""
        entry = (-task.priority, next(self._front), task.number)
        _join(self.queue if task.needs is None else self.pinned_line(task.needs), entry)

    def pinned_line(self, interpreter: str) -> Line:
        """The line of the by-value tasks that need ``interpreter`` (made if there is none)."""
        line = self.pinned.get(interpreter)
        if line is None:
            line = self.pinned[interpreter] = collections.deque()
        return line

    def holding(self, worker: WorkerState, number: int, fx: Effects) -> None:
        """``worker``'s task ``number`` keeps children in the worker (its parent runs them
        there unless they are stolen): an idle slot may now ask for one (:meth:`offer_steals`)."""
        if number in worker.leases or number in worker.waiting:
            worker.lending.add(number)
            worker.nests = True
            self.lenders[worker.id] = worker
            self.offer_steals(fx)

    def dispatch(self, fx: Effects) -> None:
        """Lease queued tasks to workers with a free lease, as the policy chooses.

        A task that can start at once (the worker has an idle slot) is sent *urgently*; one that
        will wait in the worker's prefetch queue may be held back a little and leave with the
        next batch (see :meth:`Outbox.put`): the worker is busy, so nothing is lost by waiting,
        and a burst of submissions costs a few writes instead of one each.
        """
        queue, pinned = self.queue, self.pinned
        if not queue and not pinned:
            if self.lenders:
                self.offer_steals(fx)
            return
        choose, tasks, lease, queued = self.policy.choose, self.tasks, self.lease, TaskState.QUEUED
        free = [w for w in self.workers.values() if len(w.leases) < w.capacity]
        while free and (queue or pinned):
            worker = choose(free)
            if worker is None:
                return  # the policy would rather wait for a faster worker
            line = queue
            if pinned:  # the worker takes the first task in line that it can load
                own = pinned.get(worker.interpreter)  # type: ignore[arg-type]
                if own and (not queue or own[0] < queue[0]):
                    line = own
                elif not queue:
                    free.remove(worker)  # nothing waits that this worker can load
                    continue
            _, _, number = line.popleft()
            if not line and line is not queue:
                del pinned[worker.interpreter]  # type: ignore[arg-type]
            task = tasks.get(number)
            if task is None or task.state is not queued:
                continue  # cancelled or finished while queued
            lease(worker, task, fx)
            if len(worker.leases) >= worker.capacity:
                free.remove(worker)
        if self.lenders and not queue:
            self.offer_steals(fx)

    def offer_steals(self, fx: Effects) -> None:
        """Work stealing: while a slot is idle and nothing is queued, ask a worker whose tasks
        keep children of their own (HOLDING) to give one up (STEAL). It submits its oldest kept
        child -- in a recursion, the biggest subtree -- as an ordinary task, which the next
        dispatch leases to the idle slot. One request per worker at a time; it stands until the
        worker submits (the answer) or its lending tasks end."""
        lenders, workers = self.lenders, self.workers
        for worker in list(lenders.values()):
            if not worker.lending or workers.get(worker.id) is not worker:
                del lenders[worker.id]
                worker.asked = False
        if not lenders or self.pinned:
            return
        idle = sum(w.slots - len(w.leases) for w in workers.values() if len(w.leases) < w.slots)
        for worker in lenders.values():
            if idle <= 0:
                return
            if not worker.leases:
                continue  # its tasks all wait, having run what they kept: nothing to give
            idle -= 1  # a request already out covers one idle slot
            if not worker.asked:
                self.counts["steals"] += 1
                fx.reply(worker, worker.ask_to_lend())

    def choose(self) -> WorkerState | None:
        free = [w for w in self.workers.values() if len(w.leases) < w.capacity]
        return self.policy.choose(free) if free else None

    def lease(self, worker: WorkerState, task: Task, fx: Effects) -> None:
        task.state = TaskState.RUNNING
        self.running += 1
        task.worker = worker
        worker.lease(task)
        # A worker whose tasks keep children learns, with the task, how many slots are idle
        # with nothing queued: its task gives that many children away at once, a steal's round
        # trip (HOLDING, STEAL) sooner.
        task.lend = 0
        if worker.nests and not self.queue and not self.pinned:
            task.lend = sum(1 for w in self.workers.values() if len(w.leases) < w.slots)
        fx.send(worker, task, len(worker.leases) <= worker.slots)
