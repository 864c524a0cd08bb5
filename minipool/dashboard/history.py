"""The dashboard's memory: a bounded ring of recent tasks and events, and the counters behind
the charts and the metrics.

Technique: *observe the effects, fold them without allocating, describe lazily, in fixed
memory*. The coordinator already turns every decision into an
:class:`~minipool.cluster.effects.Effects` object (tasks to send, outcomes to deliver) and
carries it out in one function. A dashboard only has to see those objects:
:meth:`History.observe` is called there with each one and folds it at once -- per task, the
coordinator's own Task appended to a ring, its outcome and finish time put in two dictionaries,
a run time appended to a list; no object of its own, nothing described. Keeping the Effects on
a queue for later would cost more than folding them: kept a fraction of a second, they outlive
the garbage collector's young generation, and collecting the older ones stops every thread.
The monitor thread (:meth:`History.collect`, a few times a second) buckets the run times and
turns byte counts by peer into counts by transport.

What a person reads -- a :class:`TaskRecord` with its state, name, arguments and result -- is
made when the page or the API asks (:meth:`History.records`), for the tasks asked for.

Everything is bounded, so a dashboard open for days uses the same memory as one open for a
minute: the newest :data:`TASKS` leases, their outcomes, :data:`EVENTS` events,
:data:`SAMPLES` one-second samples, and of each task body :data:`BODY_KEEP` bytes (only what
the page shows a person; see :mod:`minipool.dashboard.peek`). Sizes are in docs/dashboard.md.
"""

from __future__ import annotations

import array
import bisect
import collections
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from time import monotonic
from typing import Any

from ..cluster.effects import Effects
from ..cluster.state import Outcome
from ..wire import Format, Kind
from .peek import describe_value
from .records import BODY_KEEP, BodyPrefix, TaskRecord, transport_of

__all__ = ["History", "TASKS", "EVENTS", "SAMPLES", "RUNTIME_BUCKETS"]

#: Task leases remembered (the most recent), and so task records shown.
TASKS = 2000
#: Events kept.
EVENTS = 1000
#: One-second samples kept for the charts (five minutes).
SAMPLES = 300
#: Upper bounds, in seconds, of the run-time histogram's buckets (Prometheus ``le``).
RUNTIME_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)

#: ``live(keys)``: the coordinator's word on unfinished tasks, ``{key: (state, worker)}`` with
#: state "queued", "reserved" or "running" (see :meth:`Monitor.live`).
Live = Callable[[list[tuple[str, int]]], dict[tuple[str, int], tuple[str, Any]]]

#: Outcomes past the bound forgotten at a time (by the fold, under the lock).
FORGET_EVERY = 256

#: Leases of the ring read at a time, newest first, by :meth:`History.records`.
READ_AHEAD = 128

_NONE_OPEN: dict[int, Any] = {}  # (never written: a client with no open lease pops from it)
#: Runs an iterator to its end, keeping nothing: a loop in C.
_drain: Callable[[Iterable[Any]], None] = collections.deque(maxlen=0).extend


def _leases_of(ring: list[Any], key: tuple[str, int]) -> int:
    """How often the task ``key`` is in the ring (a large task's prefix is new at each lease)."""
    return sum(1 for t in ring if t.client_number == key[1] and t.owner_id == key[0])


class History:
    """The ring of leases and events, the samples, and running totals; fed by :meth:`observe`.

    :meth:`observe` runs on the coordinator's threads, :meth:`collect` on the monitor's; both,
    and the readers, hold :attr:`lock` for a few dictionary operations at a time.
    """

    def __init__(self, tasks: int = TASKS, events: int = EVENTS, samples: int = SAMPLES) -> None:
        self.lock = threading.Lock()
        self.capacity = tasks
        #: The tasks of the newest leases, oldest first: the coordinator's own Task objects (a
        #: task leased again, its worker lost, is in it twice), or a prefix of a large one.
        self.leases: collections.deque[Any] = collections.deque(maxlen=tasks)
        #: Outcomes of recently finished tasks, and when they came, by the task in the ring.
        self.outcomes: dict[Any, Any] = {}
        self.finished: dict[Any, float] = {}
        self.keep = 2 * tasks  # outcomes kept: those of every task in the ring (see below)
        self.forget_every = min(FORGET_EVERY, tasks)
        #: Tasks the dashboard itself ended: key -> ("cancelled" or "terminated", time).
        self.ended: dict[tuple[str, int], tuple[str, float]] = {}
        # Leased tasks with no outcome yet, by client id and the client's number for them:
        # how an outcome finds its task (two levels, so that no key is made per task).
        self._open: dict[str, dict[int, Any]] = {}
        self._records: dict[Any, TaskRecord] = {}
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=events)
        self.samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=samples)
        self._seq = itertools.count(1)
        self.last_seq = 0
        self.runtime_counts = [0] * (len(RUNTIME_BUCKETS) + 1)  # the last one is +Inf
        self.runtime_sum = 0.0
        self.bytes: dict[tuple[str, str], int] = collections.defaultdict(int)  # (transport, in|out)
        # What observe gathered since the last collect: run times (in an array, which the
        # garbage collector's young collections do not walk float by float), bytes by peer, and
        # the tasks whose outcome is to be described (a failure, or a result too large to keep).
        self._runtimes = array.array("d")
        self._sent: collections.defaultdict[Any, int] = collections.defaultdict(int)
        self._received: collections.defaultdict[Any, int] = collections.defaultdict(int)
        self._later: list[Any] = []
        #: Effects folded so far (the live feed's sign that the tasks may have changed).
        self.folds = 0
        self._collected = 0

    def observe(self, fx: Effects) -> None:
        """Called by the coordinator, on its own threads, with every Effects it applies.

        It folds them at once rather than queueing them for later: an Effects object kept
        for a fraction of a second outlives the garbage collector's young generation, and
        walking the older ones costs the coordinator more than this fold does. So, per task:
        a few appends and dictionary entries of objects that exist already, no new object the
        collector would track, nothing described, no Python-level call under the lock but one
        every few hundred outcomes to forget the oldest -- and one call for the whole Effects,
        one clock read for all its outcomes.

        Bytes are summed while the peer stays the same (an effect's tasks mostly go to one
        worker, its outcomes to one client, from one worker) and counted when it changes.
        """
        sends, deliveries = fx.sends, fx.deliveries
        if not sends and not deliveries:
            return
        with self.lock:
            self.folds += 1
            opened, sent = self._open, self._sent
            if sends:
                append = self.leases.append
                worker, total, owner, table = sends[0][0], 0, None, _NONE_OPEN
                for peer, task, _ in sends:
                    if peer is not worker:
                        sent[worker] += total
                        worker, total = peer, 0
                    size = len(task.body)
                    total += size
                    if size > BODY_KEEP:
                        task = BodyPrefix(task, peer)
                    append(task)
                    if task.owner_id is not owner:
                        owner = task.owner_id
                        found = opened.get(owner)  # (not setdefault: that would make a dict each time)
                        if found is None:
                            found = opened[owner] = {}
                        table = found
                    table[task.client_number] = task
                sent[worker] += total
            if not deliveries:
                return
            stamp = monotonic()
            outcomes, finished, runtime = self.outcomes, self.finished, self._runtimes.append
            received, later = self._received, self._later
            failure = Kind.FAILURE  # (an enum member read from its class costs more than the rest)
            client, worker = deliveries[0][0], None
            table = opened.get(client.id, _NONE_OPEN)
            total = bodies = results = 0
            for peer, number, outcome in deliveries:
                if peer is not client:
                    sent[client] += total
                    received[client] += bodies
                    client, total, bodies = peer, 0, 0
                    table = opened.get(client.id, _NONE_OPEN)
                size = len(outcome.body)
                total += size
                task = table.pop(number, None)
                if task is None:  # a stored outcome handed out again, or a lease not seen
                    continue
                runtime(stamp - task.leased_at)
                bodies += task.size if task.__class__ is BodyPrefix else len(task.body)
                if task.worker is not worker:
                    received[worker] += results
                    worker, results = task.worker, 0
                results += size
                outcomes[task] = outcome
                finished[task] = stamp
                if size > BODY_KEEP or outcome.kind is failure:
                    later.append(task)
            sent[client] += total
            received[client] += bodies
            received[worker] += results
            if len(finished) - self.keep >= self.forget_every:
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        """The oldest outcomes go, a few hundred at a time, as they come (the caller holds the
        lock): the newest 2 * capacity include those of every task in the ring (only tasks
        leased before one, and running then, can finish after it). Here rather than on the
        monitor's thread because that is where the coordinator frees a task without a
        dashboard: left for the next look, a burst's tasks would all be freed at once after it
        ended, a pause of milliseconds on whatever the coordinator does next. Deleted by key
        in loops that run in C, not rebuilt from items(): a tuple per entry would make the
        garbage collector run."""
        finished = self.finished
        oldest = list(itertools.islice(finished, len(finished) - self.keep))
        _drain(map(finished.__delitem__, oldest))
        _drain(map(self.outcomes.pop, oldest, itertools.repeat(None)))

    def collect(self) -> int:
        """The monitor's part, once a look: bucket the run times, turn peers into transports,
        describe what waited for it, trim. Returns how many Effects were observed since."""
        with self.lock:
            folded, self._runtimes = self._runtimes, array.array("d")
            sent, self._sent = self._sent, collections.defaultdict(int)
            received, self._received = self._received, collections.defaultdict(int)
            later, self._later = self._later, []
            observed, self._collected = self.folds - self._collected, self.folds
            for owner in [owner for owner, table in self._open.items() if not table]:
                del self._open[owner]
        runtimes = sorted(folded)
        buckets, low = [0] * len(self.runtime_counts), 0
        for i, bound in enumerate(RUNTIME_BUCKETS):
            high = bisect.bisect_right(runtimes, bound, low)
            buckets[i], low = high - low, high
        buckets[-1] = len(runtimes) - low
        with self.lock:
            self.runtime_counts = [a + b for a, b in zip(self.runtime_counts, buckets, strict=True)]
            self.runtime_sum += sum(runtimes)
            for direction, sizes in (("out", sent), ("in", received)):
                for peer, size in sizes.items():
                    if peer is not None:
                        self.bytes[(transport_of(peer), direction)] += size
        for task in later:
            self._describe(task)
        return observed

    def _describe(self, task: Any) -> None:
        """A failure becomes an event; a result too large to hold on to, its description."""
        outcome = self.outcomes.get(task)
        if outcome is None:
            return
        text = describe_value(outcome.body, int(outcome.fmt), outcome.codec)
        with self.lock:
            if len(outcome.body) > BODY_KEEP and task in self.outcomes:
                self.outcomes[task] = Outcome(outcome.kind, Format.JSON, "none", text.encode())  # as is
            if outcome.kind is Kind.FAILURE:
                worker = "" if task.worker is None else task.worker.name
                self.event(
                    "task-failed", task=f"{task.owner_id}-{task.client_number}", worker=worker, error=text
                )

    def forget_open(self, live: Callable[[tuple[str, int]], bool]) -> None:
        """Drop open leases whose task the coordinator no longer has (its client went away, so
        no outcome is delivered): called now and then by the monitor, ``live(key)`` under the
        coordinator's lock."""
        with self.lock:
            self._open = {
                owner: {n: task for n, task in table.items() if live((owner, n))}
                for owner, table in self._open.items()
            }

    @property
    def open_leases(self) -> int:
        return sum(map(len, self._open.values()))

    # -- reading ------------------------------------------------------------------------------

    def select(
        self, state: str | None, name: str | None, limit: int, live: Live | None = None
    ) -> list[dict[str, Any]]:
        """The newest task records first, filtered by state and by a substring of the name;
        ``live`` tells the state of the unfinished ones (without it they show as running)."""
        out = []
        for record in self.records(live, state):
            if name and name not in record.call()[0]:
                continue
            out.append(record.to_json())
            if len(out) >= limit:
                break
        return out

    def find(self, key: tuple[str, int], live: Live | None = None) -> TaskRecord | None:
        """The record of task ``(client id, its number)``, if the ring still has its lease."""
        return next(self.records(live, only=key), None)

    def records(
        self, live: Live | None = None, state: str | None = None, only: tuple[str, int] | None = None
    ) -> Iterator[TaskRecord]:
        """The records of the tasks in the ring, newest lease first, made as they are read
        (a reader that wants the newest fifty makes about fifty): of one ``state``, or of the
        task ``only``. The ring is read newest first, :data:`READ_AHEAD` leases at a time, and
        ``live`` is asked once per such slice about its unfinished tasks, so the page's newest
        fifty cost one short look at the coordinator, not one over the whole ring. Nothing
        here is per task in the ring but C-level copies and lookups."""
        with self.lock:
            ring = list(self.leases)
            finished, outcomes, ended = self.finished, self.outcomes, dict(self.ended)
        # (The fold adds to those two dictionaries meanwhile, and replaces them when it trims:
        # reading them by key needs no lock, and a task folded since shows as unfinished.)
        results: dict[Any, list[float]] | None = None  # each worker's result times, in order
        leases: collections.Counter[Any] = collections.Counter()
        seen: set[tuple[str, int]] = set()  # (by key: a large task's prefix is new at each lease)
        newest = reversed(ring)
        while slice_ := list(itertools.islice(newest, READ_AHEAD)):
            keys = [(t.owner_id, t.client_number) for t in slice_ if t not in finished]
            now = live(keys) if live is not None and keys else {}
            for task in slice_:
                key = (task.owner_id, task.client_number)
                if key in seen or (only is not None and key != only):
                    continue
                seen.add(key)
                when = finished.get(task)
                holder = task.worker
                if key in ended:
                    now_state, end = ended[key]
                elif when is not None:
                    now_state = "failed" if outcomes[task].kind is Kind.FAILURE else "done"
                else:
                    now_state, holder = now.get(key, ("running", holder))
                if state and now_state != state:
                    continue
                if results is None:
                    results = self._results_by_worker(ring, finished)
                    leases = collections.Counter(ring)  # by object: a task leased again is in it twice
                record = self._records.get(task) or TaskRecord(task)
                self._records[task] = record
                record.state, record.received = now_state, task.leased_at
                record.attempts = leases[task] if task.__class__ is not BodyPrefix else _leases_of(ring, key)
                record.worker = "" if task.worker is None else task.worker.name
                record.transport = "" if task.worker is None else transport_of(task.worker)
                record.finished, record.outcome, record.started = when, outcomes.get(task), None
                if when is not None or now_state == "running":  # it started when its worker was free
                    times = results.get(holder, ())
                    before = len(times) if when is None else bisect.bisect_left(times, when)
                    record.started = max(task.leased_at, times[before - 1]) if before else task.leased_at
                if key in ended:
                    record.finished = record.finished or end
                yield record
        if len(self._records) > 2 * self.capacity:  # the cache keeps what the ring still has
            held = set(ring)
            self._records = {task: r for task, r in list(self._records.items()) if task in held}

    @staticmethod
    def _results_by_worker(ring: list[Any], finished: dict[Any, float]) -> dict[Any, list[float]]:
        """When each worker's results came, in order, of the tasks in the ring."""
        results: dict[Any, list[float]] = {}
        for task in ring:
            when = finished.get(task)
            if when is not None:
                times = results.get(task.worker)
                if times is None:
                    times = results[task.worker] = []
                times.append(when)
        for times in results.values():
            times.sort()
        return results

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append an event (the caller holds :attr:`lock`, or is the only writer)."""
        seq = next(self._seq)
        event = {"seq": seq, "time": round(time.time(), 3), "kind": kind, **fields}
        self.events.append(event)
        self.last_seq = seq
        return event

    def events_since(self, since: int, limit: int) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["seq"] > since][:limit]

    def note_outcome(self, key: tuple[str, int], state: str) -> None:
        """A task the dashboard itself ended (cancelled or terminated)."""
        with self.lock:
            self.ended[key] = (state, time.monotonic())
            if len(self.ended) > self.capacity:
                self.ended.pop(next(iter(self.ended)))
            self.event(f"task-{state}", task=f"{key[0]}-{key[1]}")
