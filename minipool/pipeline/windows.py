"""Windows and rolling aggregation over unbounded streams (seed 004).

Technique: a stream never ends, so "group all records" must become "group the records of a
*window*". A window is tumbling (back to back: every record in exactly one) or sliding (it
advances by ``step`` smaller than its size: a record is in several), and is measured in records
(``size=``) or in seconds (``seconds=``). Time is the record's own *event time* when
``timestamp=`` extracts it (deterministic, replayable: Beam's default) or the arrival *processing
time* otherwise; a time window closes when time passes its end (the *watermark*: the largest
event time seen, or the wall clock). ``key=`` keeps separate windows per key, as Storm's fields
grouping does. :func:`rolling` is the other idiom of seed 004: for every record, an aggregate of
the last N records (or seconds) of its key -- a moving average, a rolling count.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .core import Stage, positive_int, stage
from .errors import PipelineError
from .runtime import Runtime

__all__ = ["Window", "window", "rolling"]


@dataclass(frozen=True)
class Window:
    """A closed time window: ``[start, end)`` in seconds, and its records in arrival order."""

    start: float
    end: float
    records: list[Any] = field(default_factory=list)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise PipelineError(f"{name} must be a positive number, got {value!r}")
    return value


class _CountWindows(Runtime):
    def __init__(self, size: int, step: int, key: Callable[[Any], Any] | None) -> None:
        self.size, self.step, self.key = size, step, key
        self.buffers: dict[Any, list[Any]] = {}
        self.skip: dict[Any, int] = {}  # records to drop before the next window (step > size)
        self.fresh: dict[Any, int] = {}  # records not yet in any emitted window

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        out = []
        for record in chunk:
            k = None if self.key is None else self.key(record)
            if self.skip.get(k):
                self.skip[k] -= 1
                continue
            buf = self.buffers.setdefault(k, [])
            buf.append(record)
            self.fresh[k] = self.fresh.get(k, 0) + 1
            if len(buf) == self.size:
                out.append(list(buf) if self.key is None else (k, list(buf)))
                del buf[: self.step]
                self.skip[k] = max(0, self.step - self.size)
                self.fresh[k] = 0
        if out:
            emit(out)

    def holding(self) -> bool:
        return any(self.buffers.values())

    def finish(self, emit: Callable[[Any], None]) -> None:
        out = [
            buf if self.key is None else (k, buf)
            for k, buf in self.buffers.items()
            if buf and self.fresh.get(k)
        ]
        if out:
            emit(out)


class _TimeWindows(Runtime):
    def __init__(
        self,
        seconds: float,
        step: float,
        key: Callable[[Any], Any] | None,
        timestamp: Callable[[Any], float] | None,
    ) -> None:
        self.seconds, self.step, self.key, self.timestamp = seconds, step, key, timestamp
        self.open_windows: dict[tuple[Any, float], list[Any]] = {}
        self.watermark = -math.inf
        self.late = 0  # records that arrived after every window they belong to had closed

    def _starts(self, ts: float) -> list[float]:
        first = math.floor((ts - self.seconds) / self.step) + 1
        last = math.floor(ts / self.step)
        return [k * self.step for k in range(first, last + 1)]

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        now = time.time()
        for record in chunk:
            ts = now if self.timestamp is None else self.timestamp(record)
            k = None if self.key is None else self.key(record)
            placed = False
            for start in self._starts(ts):
                if start + self.seconds > self.watermark:
                    self.open_windows.setdefault((k, start), []).append(record)
                    placed = True
            self.late += not placed
            if ts > self.watermark:
                self.watermark = ts
        self._close(self.watermark, emit)

    def _close(self, watermark: float, emit: Callable[[Any], None]) -> None:
        due = sorted((w for w in self.open_windows if w[1] + self.seconds <= watermark), key=lambda w: w[1])
        if due:
            emit([self._emitted(w) for w in due])

    def _emitted(self, w: tuple[Any, float]) -> Any:
        window = Window(w[1], w[1] + self.seconds, self.open_windows.pop(w))
        return window if self.key is None else (w[0], window)

    def wait_hint(self) -> float | None:
        # processing time: wake up to close windows even when no record arrives
        return 0.05 if self.timestamp is None and self.open_windows else None

    def poll(self, emit: Callable[[Any], None]) -> None:
        if self.timestamp is None:
            self.watermark = max(self.watermark, time.time())
            self._close(self.watermark, emit)

    def holding(self) -> bool:
        return bool(self.open_windows)

    def finish(self, emit: Callable[[Any], None]) -> None:
        self._close(math.inf, emit)


def window(
    size: int | None = None,
    step: int | float | None = None,
    *,
    seconds: float | None = None,
    key: Callable[[Any], Any] | None = None,
    timestamp: Callable[[Any], float] | None = None,
    name: str | None = None,
) -> Stage:
    """Group a stream into windows of records.

    Args:
        size: records per window (count windows emit lists). The last may be shorter.
        seconds: seconds per window (time windows emit :class:`Window` objects).
        step: how far each window advances (default: its size, i.e. tumbling).
        key: separate windows per ``key(record)``; emits ``(key, window)`` pairs.
        timestamp: event time of a record in seconds (default: arrival time).

    Raises:
        PipelineError: not exactly one of ``size``/``seconds``, or a non-positive value.
    """
    if (size is None) == (seconds is None):
        raise PipelineError("window() needs exactly one of size= (records) or seconds= (time)")
    if size is not None:
        positive_int("window size", size)
        step_n = size if step is None else positive_int("window step", step)
        return stage(
            lambda: _CountWindows(size, step_n, key),
            label=f"window({size},{step_n})",
            stateful=True,
            name=name,
        )
    secs = _number("window seconds", seconds)
    step_s = secs if step is None else _number("window step", step)
    return stage(
        lambda: _TimeWindows(secs, step_s, key, timestamp),
        label=f"window({secs}s,{step_s}s)",
        stateful=True,
        name=name,
    )


class _Rolling(Runtime):
    def __init__(
        self,
        agg: Callable[[list[Any]], Any],
        size: int | None,
        seconds: float | None,
        key: Callable[[Any], Any] | None,
        value: Callable[[Any], Any] | None,
        timestamp: Callable[[Any], float] | None,
    ) -> None:
        self.agg, self.size, self.seconds = agg, size, seconds
        self.key, self.value, self.timestamp = key, value, timestamp
        self.history: dict[Any, deque[tuple[float, Any]]] = {}

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        out = []
        now = time.time()
        for record in chunk:
            k = None if self.key is None else self.key(record)
            v = record if self.value is None else self.value(record)
            ts = now if self.timestamp is None else self.timestamp(record)
            hist = self.history.get(k)
            if hist is None:
                hist = self.history[k] = deque(maxlen=self.size)
            hist.append((ts, v))
            if self.seconds is not None:
                while hist[0][0] <= ts - self.seconds:
                    hist.popleft()
            result = self.agg([item[1] for item in hist])
            out.append(result if self.key is None else (k, result))
        emit(out)

    def holding(self) -> bool:
        return bool(self.history)


def rolling(
    agg: Callable[[list[Any]], Any],
    *,
    size: int | None = None,
    seconds: float | None = None,
    key: Callable[[Any], Any] | None = None,
    value: Callable[[Any], Any] | None = None,
    timestamp: Callable[[Any], float] | None = None,
    name: str | None = None,
) -> Stage:
    """For each record, emit ``agg(values of the last size records / seconds)`` of its key.

    Emits ``(key, aggregate)`` when ``key=`` is given, else the aggregate. ``value=`` picks what
    is aggregated (default: the record); e.g. ``rolling(len, seconds=60, key=user)`` is a
    per-user count over the last minute.

    Raises:
        PipelineError: not exactly one of ``size``/``seconds``, or a non-positive value.
    """
    if (size is None) == (seconds is None):
        raise PipelineError("rolling() needs exactly one of size= (records) or seconds= (time)")
    if size is not None:
        positive_int("rolling size", size)
    if seconds is not None:
        _number("rolling seconds", seconds)
    return stage(
        lambda: _Rolling(agg, size, seconds, key, value, timestamp), label="rolling", stateful=True, name=name
    )
