"""Windows and rolling aggregation over unbounded streams (seed 004).

Technique: a stream never ends, so "group all records" must become "group the records of a
*window*". A window is tumbling (back to back: every record in exactly one) or sliding (it
advances by ``step`` smaller than its size: a record is in several), and is measured in records
(``size=``) or in seconds (``seconds=``). Time is the record's own *event time* when
``timestamp=`` extracts it (deterministic, replayable: Beam's default) or the arrival *processing
time* otherwise; a time window closes when time passes its end (the *watermark*), and
:mod:`.eventtime` adds Flink's allowed lateness, updates and a side output for late records.
``key=`` keeps separate windows per key, as Storm's fields
grouping does. :func:`rolling` is the other idiom of seed 004: for every record, an aggregate of
the last N records (or seconds) of its key -- a moving average, a rolling count.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .core import Stage, positive_int, stage
from .errors import PipelineError
from .eventtime import LateOutput, TimeWindowStage, Window, seconds_arg
from .runtime import Runtime

__all__ = ["Window", "window", "rolling"]


class _CountWindows(Runtime):
    state_fields = ("buffers", "skip", "fresh")

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


def window(
    size: int | None = None,
    step: int | float | None = None,
    *,
    seconds: float | None = None,
    key: Callable[[Any], Any] | None = None,
    timestamp: Callable[[Any], float] | None = None,
    delay: float = 0.0,
    lateness: float = 0.0,
    late: LateOutput = None,
    name: str | None = None,
) -> Stage:
    """Group a stream into windows of records.

    Args:
        size: records per window (count windows emit lists). The last may be shorter.
        seconds: seconds per window (time windows emit :class:`Window` objects).
        step: how far each window advances (default: its size, i.e. tumbling).
        key: separate windows per ``key(record)``; emits ``(key, window)`` pairs.
        timestamp: event time of a record in seconds (default: arrival time).
        delay: time windows only: the watermark trails the largest event time seen by this
            many seconds (Flink's bounded out-of-orderness); windows fire that much later.
        lateness: time windows only: seconds a fired window keeps accepting records (Flink's
            allowed lateness); each one makes it fire again as an update (``Window.update``).
        late: time windows only: where records later than ``lateness`` go, besides being
            counted in ``StageStats.late``: a side-output name (read it with
            ``Execution.side_output(name)``) or a function called with each record.

    Raises:
        PipelineError: not exactly one of ``size``/``seconds``, a non-positive size or step,
            a negative delay or lateness, or a time option given to a count window.
    """
    if (size is None) == (seconds is None):
        raise PipelineError("window() needs exactly one of size= (records) or seconds= (time)")
    if size is not None:
        if delay or lateness or late is not None:
            raise PipelineError("delay=, lateness= and late= belong to time windows (seconds=)")
        positive_int("window size", size)
        step_n = size if step is None else positive_int("window step", step)
        return stage(
            lambda: _CountWindows(size, step_n, key),
            label=f"window({size},{step_n})",
            stateful=True,
            name=name,
        )
    return TimeWindowStage(
        seconds, step, key=key, timestamp=timestamp, delay=delay, lateness=lateness, late=late, name=name
    )


class _Rolling(Runtime):
    state_fields = ("history",)

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
        seconds_arg("rolling seconds", seconds)
    return stage(
        lambda: _Rolling(agg, size, seconds, key, value, timestamp), label="rolling", stateful=True, name=name
    )
