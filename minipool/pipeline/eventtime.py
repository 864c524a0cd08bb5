"""Time windows with a watermark, allowed lateness and a side output for late records.

Technique: Flink's event-time windows. A record carries its own *event time*; the stage keeps
a *watermark*, its belief that no record older than it is still coming: the largest event
time seen, minus ``delay`` (Flink's bounded out-of-orderness). A window ``[start, end)`` fires
when the watermark reaches ``end``. Streams are not that tidy, so a fired window's records are
kept ``lateness`` seconds more (Flink's *allowed lateness*): a record that arrives in that time
joins the window and makes it fire again, as an *update* carrying every record of the window
(accumulating mode, Flink's default; no retraction is sent: a consumer keyed by window
replaces the earlier result). Once the watermark passes ``end + lateness`` the window is
purged, and a record that falls only in purged windows is *too late*: counted
(``StageStats.late``) and sent to the *side output* (Flink's ``sideOutputLateData``), never
silently lost.

Everything is decided record by record, in input order, so the output depends only on the
records and their order, never on how they were cut into chunks: a durable rerun replays the
same windows. Without ``timestamp=`` time is the arrival time and ``poll`` advances the
watermark on the wall clock, so windows close even when nothing arrives.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .core import Stage
from .errors import PipelineError
from .runtime import Runtime
from .stats import StageStats

__all__ = ["Window", "EventTimeWindows", "TimeWindowStage", "LateOutput", "seconds_arg"]

#: Where too-late records go: a side-output name (``Execution.side_output(name)``) or a function.
LateOutput = str | Callable[[Any], Any] | None


@dataclass(frozen=True)
class Window:
    """A fired time window: ``[start, end)`` in seconds and its records in arrival order.

    ``update`` is 0 for the window's first result and ``n`` for the ``n``-th update a late
    (but allowed) record caused; an update carries all the window's records, not a difference.
    """

    start: float
    end: float
    records: list[Any] = field(default_factory=list)
    update: int = 0


class EventTimeWindows(Runtime):
    """The running windows of one stage: panes per ``(key, start)``, a heap of pending ends.

    Args:
        seconds, step: window size and advance (``step == seconds``: tumbling).
        key, timestamp: per-key windows; event time of a record (``None``: arrival time).
        delay: how far the watermark trails the largest event time seen.
        lateness: seconds a fired window still accepts records (and re-fires).
        late: called with each too-late record (the side output), or ``None``.
        stats: the stage's statistics, whose ``late`` counts too-late records.
    """

    state_fields = ("panes", "updates", "due", "expiring", "order", "max_time")

    def __init__(
        self,
        seconds: float,
        step: float,
        key: Callable[[Any], Any] | None,
        timestamp: Callable[[Any], float] | None,
        *,
        delay: float = 0.0,
        lateness: float = 0.0,
        late: Callable[[Any], Any] | None = None,
        stats: StageStats | None = None,
    ) -> None:
        self.seconds, self.step, self.key, self.timestamp = seconds, step, key, timestamp
        self.delay, self.lateness, self.late_output = delay, lateness, late
        self.stats = stats or StageStats("window", "thread")
        self.panes: dict[tuple[Any, float], list[Any]] = {}
        self.updates: dict[tuple[Any, float], int] = {}  # fired windows -> updates sent so far
        self.due: list[tuple[float, int, tuple[Any, float]]] = []  # (end, order, window) not fired
        self.expiring: list[tuple[float, int, tuple[Any, float]]] = []  # (purge time, ...) fired
        self.order = 0
        self.max_time = -math.inf

    @property
    def watermark(self) -> float:
        """No record with an event time below this is expected any more."""
        return self.max_time - self.delay

    @property
    def late(self) -> int:
        """Records that arrived after every window they belong to was purged."""
        return self.stats.late

    def _starts(self, ts: float) -> list[float]:
        if self.step == self.seconds:
            return [math.floor(ts / self.step) * self.step]
        first = math.floor((ts - self.seconds) / self.step) + 1
        last = math.floor(ts / self.step)
        return [k * self.step for k in range(first, last + 1)]

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        out: list[Any] = []
        now = time.time()
        seconds, horizon = self.seconds, self.lateness
        panes, timestamp, key = self.panes, self.timestamp, self.key
        for record in chunk:
            ts = now if timestamp is None else timestamp(record)
            k = None if key is None else key(record)
            watermark = self.max_time - self.delay
            placed = False
            for start in self._starts(ts):
                if start + seconds + horizon <= watermark:
                    continue  # purged: this window said its last word
                w = (k, start)
                pane = panes.get(w)
                if pane is None:
                    pane = panes[w] = []
                    heapq.heappush(self.due, (start + seconds, self.order, w))
                    self.order += 1
                pane.append(record)
                placed = True
                if w in self.updates:  # fired already: the late record updates its result
                    self.updates[w] += 1
                    out.append(self._result(w, self.updates[w]))
            if not placed:
                self._too_late(record)
            if ts > self.max_time:
                self.max_time = ts
            # a new time, or a late record that opened a window the watermark already passed
            watermark = self.max_time - self.delay
            if (self.due and self.due[0][0] <= watermark) or (
                self.expiring and self.expiring[0][0] <= watermark
            ):
                self._advance(watermark, out)
        if out:
            emit(out)

    def _too_late(self, record: Any) -> None:
        self.stats.late += 1
        if self.late_output is not None:
            self.late_output(record)

    def _advance(self, watermark: float, out: list[Any]) -> None:
        """Fire the windows whose end the watermark reached; purge those past their lateness."""
        due, expiring = self.due, self.expiring
        while due and due[0][0] <= watermark:
            end, order, w = heapq.heappop(due)
            self.updates[w] = 0
            out.append(self._result(w, 0))
            if end + self.lateness <= watermark:
                self._purge(w)
            else:
                heapq.heappush(expiring, (end + self.lateness, order, w))
        while expiring and expiring[0][0] <= watermark:
            self._purge(heapq.heappop(expiring)[2])

    def _purge(self, w: tuple[Any, float]) -> None:
        del self.panes[w], self.updates[w]

    def _result(self, w: tuple[Any, float], update: int) -> Any:
        pane = self.panes[w]
        window = Window(
            w[1], w[1] + self.seconds, pane if update == 0 and not self.lateness else list(pane), update
        )
        return window if self.key is None else (w[0], window)

    def wait_hint(self) -> float | None:
        # arrival time: wake up to close windows even when no record arrives
        return 0.05 if self.timestamp is None and self.panes else None

    def poll(self, emit: Callable[[Any], None]) -> None:
        if self.timestamp is None:
            self.max_time = max(self.max_time, time.time())
            out: list[Any] = []
            self._advance(self.watermark, out)
            if out:
                emit(out)

    def holding(self) -> bool:
        return bool(self.panes)

    def finish(self, emit: Callable[[Any], None]) -> None:
        out: list[Any] = []
        self._advance(math.inf, out)
        if out:
            emit(out)


def seconds_arg(name: str, value: Any, *, zero: bool = False) -> float:
    """``value`` if it is a positive (with ``zero``: non-negative) number, else a PipelineError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value >= 0 if zero else value > 0)
    ):
        kind = "non-negative" if zero else "positive"
        raise PipelineError(f"{name} must be a {kind} number of seconds, got {value!r}")
    return float(value) if zero else value


class TimeWindowStage(Stage):
    """The declaration of a time window stage; each run opens a fresh :class:`EventTimeWindows`.

    ``late`` is a side-output name (each run's too-late records are then
    ``Execution.side_output(name)``) or a function called with each one.
    """

    stateful = True

    def __init__(
        self,
        seconds: Any,
        step: Any,
        *,
        key: Callable[[Any], Any] | None,
        timestamp: Callable[[Any], float] | None,
        delay: Any = 0.0,
        lateness: Any = 0.0,
        late: LateOutput = None,
        name: str | None = None,
    ) -> None:
        self.seconds = seconds_arg("window seconds", seconds)
        self.step = self.seconds if step is None else seconds_arg("window step", step)
        self.delay = seconds_arg("window delay", delay, zero=True)
        self.lateness = seconds_arg("window lateness", lateness, zero=True)
        if late is not None and not (isinstance(late, str) or callable(late)):
            raise PipelineError(f"late= takes a side-output name or a function, got {late!r}")
        self.key, self.timestamp, self.late, self.name = key, timestamp, late, name
        self.label = f"window({self.seconds}s,{self.step}s)"

    def open(self, name: str, run: Any, stats: StageStats) -> Runtime:
        late = run.side_output(self.late).append if isinstance(self.late, str) else self.late
        return EventTimeWindows(
            self.seconds,
            self.step,
            self.key,
            self.timestamp,
            delay=self.delay,
            lateness=self.lateness,
            late=late,
            stats=stats,
        )
