"""Load-balancing policies: which worker gets the next task.

Technique (seed 001's weighted dynamic load balancing; seed 001's Consul resolver picks at
random): the coordinator keeps, for every worker, how many slots it advertised, how many tasks
it holds, and two moving averages it measures itself: how long a task runs there (from the
lease, or from the result before it when the worker was busy, so the network is inside it), and
how long a dispatched task waits there before it can start (its *pull* time: 0 for a task sent
to a free slot, the wait for a slot for a prefetched one). The simulator
(:mod:`minipool.cluster.simulate`) measures both the same way. A policy is a small object that
looks at the workers with a free slot and picks one. Four are provided, each the textbook answer to
a different question:

* ``"round-robin"``: take turns. Fair, oblivious: a slow worker gets as many tasks as a fast one.
* ``"random"``: pick uniformly, as Consul's DNS resolver does. No state, fine at scale, equally
  oblivious to speed.
* ``"least-loaded"`` (default): the lowest fraction of busy slots. Adapts to load, not to speed.
* ``"latency"``: seed 001's dynamic weights. A worker's weight is its measured throughput,
  ``slots / avg_run``; the task goes where it is expected to *finish* first,
  ``avg_pull + (inflight + 1) * avg_run / slots``. Workers never measured are tried first, so a
  newcomer gets a chance to show its speed.

Why it is built this way: policies are pure (no clock, no I/O, no locks) and ``choose`` is one
O(n) pass with no allocation beyond a float per candidate, because the coordinator calls it for
every task it dispatches. The coordinator owns the state (``Candidate`` is a protocol its
per-worker records satisfy) and updates the averages with ``Ewma``.
"""

from __future__ import annotations

import random as _random
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = [
    "Candidate",
    "Policy",
    "Ewma",
    "ewma_step",
    "LeastLoaded",
    "RoundRobin",
    "RandomChoice",
    "Latency",
    "POLICIES",
    "get_policy",
]


class Candidate(Protocol):
    """What a policy may read about a worker (the coordinator's per-worker record). Read-only:
    a policy never changes a worker, and a record may compute these (the simulator does)."""

    @property
    def id(self) -> str: ...
    @property
    def slots(self) -> int: ...  # tasks it can run at once
    @property
    def inflight(self) -> int: ...  # tasks leased to it and not finished
    @property
    def avg_run(self) -> float | None: ...  # EWMA of a task's run time there, s (None = unknown)
    @property
    def avg_pull(self) -> float | None: ...  # EWMA of dispatch-to-start delay, s (None = unknown)


#: A policy hands back one of the very records it was given, with their type.
C = TypeVar("C", bound=Candidate)


class Policy(Protocol):
    """Picks a worker for the next task; ``None`` means "none of these, keep it queued".

    ``holds_back`` says whether ``choose`` may answer ``None`` while candidates exist (then the
    scheduler asks again on every submission too, not only when a lease is freed); ``forget``
    drops what the policy remembers about a worker that has left.
    """

    name: str
    holds_back: bool

    def choose(self, candidates: Sequence[C]) -> C | None: ...

    def forget(self, worker_id: str) -> None: ...


class _Stateless:
    """For policies that never hold a task back and remember nothing per worker."""

    holds_back = False

    def forget(self, worker_id: str) -> None:
        pass


def ewma_step(value: float | None, sample: float, alpha: float) -> float:
    """One step of an exponentially weighted moving average: ``sample`` folded into ``value``
    with weight ``alpha`` (the first sample, when ``value`` is None, is taken as is)."""
    return float(sample) if value is None else value + alpha * (sample - value)


class Ewma:
    """An exponentially weighted moving average: recent samples count most.

    ``value = alpha * sample + (1 - alpha) * value``; the first sample is taken as is. With
    ``alpha=0.3`` a worker that slows down is noticed within a handful of tasks, while one odd
    task moves the estimate by only 30%.

    Args:
        alpha: the weight of each new sample, in (0, 1].

    Raises:
        ValueError: ``alpha`` is out of range.
    """

    __slots__ = ("alpha", "value", "count")

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha
        self.value: float | None = None
        self.count = 0

    def update(self, sample: float) -> float:
        """Fold in one measurement and return the new average."""
        self.count += 1
        self.value = ewma_step(self.value, sample, self.alpha)
        return self.value

    def __repr__(self) -> str:
        return f"Ewma(alpha={self.alpha}, value={self.value}, count={self.count})"


class LeastLoaded(_Stateless):
    """The worker with the smallest share of busy slots; among equals, the most free slots."""

    name = "least-loaded"

    def choose(self, candidates: Sequence[C]) -> C | None:
        # Asked once per lease: comparisons rather than max() and a float("inf") start.
        best, best_key = None, None
        for c in candidates:
            slots = c.slots if c.slots > 1 else 1
            inflight = c.inflight
            key = (inflight / slots, inflight - slots)
            if best_key is None or key < best_key:
                best, best_key = c, key
        return best


class RoundRobin(_Stateless):
    """Take turns: the candidate served least recently goes next.

    Keeping a "last served" ticket per worker id, rather than an index into the list, keeps the
    turn order fair when workers join, leave or are skipped for lack of a free slot: a newcomer
    goes first once, then queues up like everyone else.
    """

    name = "round-robin"

    def __init__(self) -> None:
        self._served: dict[str, int] = {}
        self._ticket = 0

    def choose(self, candidates: Sequence[C]) -> C | None:
        served = self._served
        best, best_ticket = None, None
        for c in candidates:
            ticket = served.get(c.id, -1)
            if best_ticket is None or ticket < best_ticket:
                best, best_ticket = c, ticket
        if best is None:
            return None
        self._ticket += 1
        served[best.id] = self._ticket
        if len(served) > 4 * len(candidates) + 64:  # forget workers long gone
            present = {c.id for c in candidates}
            self._served = {k: v for k, v in served.items() if k in present}
        return best

    def forget(self, worker_id: str) -> None:
        self._served.pop(worker_id, None)


class RandomChoice(_Stateless):
    """Uniformly at random among the workers with a free slot (Consul's resolver).

    Args:
        rng: the random source; pass a seeded ``random.Random`` for reproducible runs.
    """

    name = "random"

    def __init__(self, rng: _random.Random | None = None) -> None:
        self._rng = rng or _random.Random()

    def choose(self, candidates: Sequence[C]) -> C | None:
        return self._rng.choice(candidates) if candidates else None


class Latency:
    """Earliest expected completion, from each worker's measured run and pull times.

    A worker never measured (``avg_run is None``) and idle is tried first. One still being
    measured is estimated with the mean run time of the measured ones. With nothing measured
    at all, this falls back to least-loaded.

    Holding back: the coordinator passes only workers with a free lease, so when the one free
    worker is a slow one, taking turns would queue the task behind it even though a fast worker
    (busy right now) would finish it sooner. The policy therefore remembers each worker's last
    expected completion time; if the best candidate would finish later than a worker seen
    recently, and the task could not start there at once (every slot of the candidate is busy;
    it would sit in the worker's prefetch queue), it answers ``None`` and the task waits for the
    next completion -- even if a slower candidate sits idle, since waiting for the fast worker
    finishes sooner. The best candidate is never refused when it has a free slot, so a task can
    always make progress; a worker that leaves is forgotten at once (``forget``), and one unseen
    for ``memory`` decisions (busy for long) is forgotten too.

    Args:
        memory: decisions after which an absent worker's estimate no longer counts.
    """

    name = "latency"
    holds_back = True

    def __init__(self, memory: int = 64) -> None:
        self._fallback = LeastLoaded()
        self._memory = memory
        self._calls = 0
        self._seen: dict[str, tuple[int, float]] = {}  # id -> (decision number, next eta)

    def choose(self, candidates: Sequence[C]) -> C | None:
        self._calls += 1
        calls, seen = self._calls, self._seen
        best, best_eta = None, float("inf")
        known_total, known = 0.0, 0
        for c in candidates:
            run = c.avg_run
            if run is None:
                if c.inflight == 0:
                    return c  # probe: measure it before trusting it
                continue
            known_total += run
            known += 1
            eta = (c.avg_pull or 0.0) + (c.inflight + 1) * run / max(c.slots, 1)
            seen[c.id] = (calls, eta)
            if eta < best_eta:
                best, best_eta = c, eta
        if known == 0:
            return self._fallback.choose(candidates)
        if known < len(candidates):  # unmeasured but busy: assume the average
            guess = known_total / known
            for c in candidates:
                if c.avg_run is None:
                    eta = (c.avg_pull or 0.0) + (c.inflight + 1) * guess / max(c.slots, 1)
                    if eta < best_eta:
                        best, best_eta = c, eta
        if best is not None and best.inflight >= best.slots and self._waiting_is_faster(best_eta):
            return None
        if best is not None and best.avg_run is not None:
            # After this lease the next task there would wait one more turn.
            seen[best.id] = (calls, best_eta + best.avg_run / max(best.slots, 1))
        return best

    def forget(self, worker_id: str) -> None:
        """A worker left: its promise of an early finish no longer holds tasks back."""
        self._seen.pop(worker_id, None)

    def _waiting_is_faster(self, eta: float) -> bool:
        """Whether a worker absent from this decision recently promised an earlier finish."""
        calls, faster, stale = self._calls, False, []
        for worker_id, (when, their_eta) in self._seen.items():
            if when == calls:
                continue  # a candidate now, already compared
            if calls - when > self._memory:
                stale.append(worker_id)
            elif their_eta < eta:
                faster = True
        for worker_id in stale:
            del self._seen[worker_id]
        return faster


POLICIES = {
    "least-loaded": LeastLoaded,
    "round-robin": RoundRobin,
    "random": RandomChoice,
    "latency": Latency,
}


def get_policy(name: str, *, rng: _random.Random | None = None) -> Policy:
    """A fresh policy object by name (each holds its own state, e.g. round-robin's turns).

    Args:
        name: one of ``POLICIES``.
        rng: the random source for ``"random"`` (ignored by the others).

    Raises:
        ValueError: the name is unknown; the message lists the known ones.
    """
    if name == "random":
        return RandomChoice(rng)
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown balancing policy {name!r}; known: {', '.join(POLICIES)}") from None
