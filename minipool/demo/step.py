"""What a step of the tour is: a name, the sentence it teaches, and a function that measures.

Technique: *a registry of small measured experiments*. A step is data (:class:`Step`); running
it returns data (:class:`Outcome`: a table, a chart's bars and a verdict); printing and the
HTML page are done in one place (:mod:`.report`). So a step is one function in one module,
listed once in :data:`minipool.demo.steps.STEPS`, and it never formats output itself.

Every step measures the technique beside its peer *in the same run*, taking turns
(:func:`alternate`): on a shared machine a noisy spell then slows both alike, and a
speed-up cannot come from the serial run having been measured during someone else's build.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Step",
    "Outcome",
    "Context",
    "alternate",
    "timed",
    "speedup_verdict",
    "machine_load",
    "beyond_workers",
    "COLUMNS",
]

#: The columns every step's table starts with; a step adds its figure and the peer's.
COLUMNS = ["what", "workers", "tasks", "seconds"]


@dataclass
class Outcome:
    """What one step measured.

    Args:
        headers: the table's columns (:data:`COLUMNS` first).
        rows: one row per variant measured, the technique and its peer.
        headline: the figure that matters, in a few words ("1.9x faster than serial").
        verdict: one or two sentences the numbers support, including where it does not pay.
        chart: bar label -> value, drawn as the step's SVG chart.
        unit: what the chart's bars measure.
        notes: lines printed under the table (what was computed, what was checked).
        peer: the chart bar of the peer the technique is measured against (drawn grey).
    """

    headers: list[str]
    rows: list[list[Any]]
    headline: str
    verdict: str
    chart: dict[str, float]
    unit: str
    notes: list[str] = field(default_factory=list)
    peer: str = ""
    seconds: float = 0.0  # the step's wall-clock time, filled in by the tour


@dataclass(frozen=True)
class Step:
    """One technique of the articles, measured: ``run(context)`` returns its :class:`Outcome`."""

    name: str
    title: str
    teaches: str
    run: Callable[[Context], Outcome]


class Context:
    """What a step may use: the sizes to run at, a shared embedded pool, and a progress line.

    The shared pool starts at the first step that asks for it and is reused by the next ones,
    so the tour pays its start-up once; steps that need a pool of a special kind (another
    transport, autoscaling, a journal) start their own.
    """

    def __init__(self, workers: int, quick: bool, progress: Callable[[str], None] | None = None) -> None:
        self.workers = workers
        self.quick = quick
        self._progress = progress or (lambda message: print(f"  .. {message}", file=sys.stderr, flush=True))
        self._pool: Any = None

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def say(self, message: str) -> None:
        self._progress(message)

    def pool(self) -> Any:
        """The shared embedded pool (``Pool(workers)`` on tcp://), started on first use."""
        if self._pool is None:
            from ..pool import Pool

            self.say(f"starting a coordinator and {self.workers} worker processes")
            self._pool = Pool(self.workers, dashboard="127.0.0.1:0")
            self._pool.wait_for_workers()
            self.say(f"live dashboard while the tour runs: {self._pool.dashboard.server.private_url}")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def alternate(fns: dict[str, Callable[[], Any]], rounds: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Run each of ``fns`` once per round, in turn, for ``rounds`` rounds; return the median
    seconds of each and the value of its last run (so a step can check what it computed)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    values: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            values[name], seconds = timed(fn)
            times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}, values


def machine_load() -> tuple[bool, str]:
    """Whether other work keeps the cores busy (the 1-minute load average at least the core
    count), and the figure that says so, for a verdict that blames the machine."""
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return load >= cores, f"load average {load:.1f} on {cores} cores"


def beyond_workers(ratio: float, workers: int) -> str:
    """A sentence for a speed-up above the worker count, which the work alone cannot give: on an
    overloaded machine the scheduler shares the cores per process, so ``workers`` processes get
    that many shares against the serial run's one. Empty when the ratio is within reach."""
    if ratio <= workers * 1.1:
        return ""
    return (
        f" More than {workers}x on {workers} workers is not the work going faster: on a machine this "
        f"busy ({machine_load()[1]}) the scheduler gives {workers} processes {workers} shares of the "
        "cores against the serial run's one."
    )


def speedup_verdict(ratio: float, pays: str, does_not: str) -> str:
    """The sentence for a measured speed-up: ``pays`` when it is clearly above 1, else ``does_not``
    (on a shared machine, a ratio within 15% of 1 is no evidence either way)."""
    return pays if ratio >= 1.15 else does_not
