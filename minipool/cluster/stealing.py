"""Children kept where they were submitted: fork/join's local deque, and work stealing.

Technique: *work stealing* (Cilk, Java's ForkJoinPool, Go's scheduler), over a coordinator.
A task that submits a child and then waits on it would pay a round trip through the coordinator
(about 150 microseconds here) for what is often a few microseconds of work: a recursion cut
into tasks cannot win that way. So a child submitted from inside a task is *kept* in its
worker, in order of submission, and its parent, when it waits on it, takes it back and runs it
in its own thread, like a function call (newest first when it helps: depth first, as fork/join
runs). Nothing leaves the worker while every slot of the pool is busy.

When a slot is idle and nothing is queued, the coordinator asks a worker whose tasks keep
children (they said so once, with HOLDING) to give one up: STEAL. The worker submits its
*oldest* kept child -- in a recursion the biggest subtree, so one steal buys the thief the most
work -- as an ordinary task, and the parent, when it gets there, waits on it like any remote
child (giving its slot back, see :mod:`minipool.cluster.nesting`). A request that finds nothing
kept stands: the next child kept is given at once instead.

The worker is authoritative: a kept child leaves this table exactly once, to be run here, to be
submitted (stolen, waited on with a timeout or through ``wait``/``as_completed``, or kept too
long), or to be cancelled; so it never runs twice. A kept child dies with its worker, as a
queued child of a lost worker is cancelled: the parent runs again elsewhere and submits its
own. Children of a parent that neither submits nor waits for :data:`PUBLISH_AFTER` seconds
(it sleeps, or computes at length) are submitted, where every worker, and ``status()``, sees
them; a parent running one of its kept children is waiting, however long that child runs.

This module is the table, plain data behind one lock; :mod:`minipool.nested` runs and submits
what it hands out.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["Kept", "KeptChildren", "PUBLISH_AFTER"]

#: Seconds a parent may leave its kept children untouched before they are submitted.
PUBLISH_AFTER = 0.05


class Kept:
    """A kept child: its number in the tasks' client, the task that made it, and either its
    SUBMIT (``message``) or, not pickled yet, the call itself (``call``, whatever the client
    needs to pack it if it leaves)."""

    __slots__ = ("number", "owner", "message", "call")

    def __init__(self, number: int, owner: Any, message: Any = None, call: Any = None) -> None:
        self.number = number
        self.owner = owner  # the RunningTask that holds the slot it was submitted from
        self.message = message
        self.call = call


class KeptChildren:
    """A worker's kept children, oldest first, and the steal requests not yet answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[int, Kept] = {}  # insertion order: the oldest first
        self._owners: dict[Any, int] = {}  # tasks with children kept, and how many: aging reads these
        self.demand = 0  # STEAL requests that found nothing kept
        self.counts = {"kept": 0, "inline": 0, "stolen": 0, "submitted": 0}

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, number: int, owner: Any, message: Any = None, call: Any = None) -> bool:
        """Keep a child just submitted by ``owner`` (its SUBMIT, or its call); False if a steal
        request waits for it (then it is to be submitted now)."""
        with self._lock:
            owner.touched = time.monotonic()
            if self.demand:
                self.demand -= 1
                self.counts["stolen"] += 1
                return False
            self._kept[number] = Kept(number, owner, message, call)
            self._owners[owner] = self._owners.get(owner, 0) + 1
            self.counts["kept"] += 1
            return True

    def _left(self, kept: Kept | None) -> Kept | None:
        """``kept`` has left the table (under the lock): its owner has one fewer."""
        if kept is not None:
            left = self._owners[kept.owner] - 1
            if left:
                self._owners[kept.owner] = left
            else:
                del self._owners[kept.owner]
        return kept

    def take(self, number: int) -> Kept | None:
        """Child ``number``, to run here now, if it is still kept (then :meth:`ran` after)."""
        with self._lock:
            kept = self._left(self._kept.pop(number, None))
            if kept is not None:
                self._running(kept)
            return kept

    def newest(self) -> Kept | None:
        """The newest kept child, to run here (a parent helping while it waits)."""
        with self._lock:
            if not self._kept:
                return None
            kept = self._kept.popitem()[1]
            self._left(kept)
            self._running(kept)
            return kept

    def _running(self, kept: Kept) -> None:
        """(Under the lock.) ``kept`` runs here now: its owner is busy with its children, and
        its other kept children do not age meanwhile, however long this one runs."""
        self.counts["inline"] += 1
        kept.owner.running_kept += 1

    def ran(self, kept: Kept) -> None:
        """``kept``, handed out by :meth:`take` or :meth:`newest`, has run."""
        with self._lock:
            kept.owner.running_kept -= 1
            kept.owner.touched = time.monotonic()

    def steal(self) -> Kept | None:
        """The oldest kept child, to submit for an idle slot; None (and the request stands) if
        nothing is kept."""
        with self._lock:
            if not self._kept:
                self.demand += 1
                return None
            self.counts["stolen"] += 1
            return self._left(self._kept.pop(next(iter(self._kept))))

    def drop(self, number: int) -> Kept | None:
        """Child ``number`` leaves the table unrun (it is cancelled), if it is still kept."""
        with self._lock:
            return self._left(self._kept.pop(number, None))

    def release(self, numbers: Any = None, owner: Any = None, idle_since: float | None = None) -> list[Kept]:
        """Take the kept children to submit: those in ``numbers``, those of ``owner`` (a task
        that ended), or those whose owner was last active before ``idle_since``."""
        with self._lock:
            if not self._kept:
                return []
            if idle_since is not None and all(
                o.touched >= idle_since or o.running_kept for o in self._owners
            ):
                return []  # (the clock's question, every 10 ms: answered without a walk)
            out = [
                k
                for k in self._kept.values()
                if (numbers is not None and k.number in numbers)
                or (owner is not None and k.owner is owner)
                or (idle_since is not None and k.owner.touched < idle_since and not k.owner.running_kept)
            ]
            for kept in out:
                self._left(self._kept.pop(kept.number))
            self.counts["submitted"] += len(out)
            return out

    def __contains__(self, number: object) -> bool:
        return number in self._kept

    def forget_demand(self) -> None:
        """No task here keeps children now: requests still standing are void."""
        with self._lock:
            self.demand = 0
