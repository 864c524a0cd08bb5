"""Streaming benchmark: a per-key tumbling event-time window count, minipool beside Bytewax.

One workload, the classic first streaming job: records ``(event time, user)`` arriving
slightly out of order (up to half a second), counted per user in 10-second tumbling windows of
event time, with a watermark one second behind the largest event time seen. Every engine runs
on the same list of records in the same process, taking turns round after round (the median
is shown), and every engine's answer is checked against the others:

* **floor**: a plain Python loop into a ``dict``: no watermark, no window ever closes before the
  end; what any Python engine's per-record work is measured against;
* **minipool**: ``pl.source(records) | pl.window(seconds=10, key=..., timestamp=..., delay=1)``
  and a ``map`` to ``(user, start, count)``;
* **Bytewax** (``pip install bytewax``, the ``bench`` extra): ``count_window`` with an
  ``EventClock`` (``wait_for_system_duration`` one second) and a ``TumblingWindower``, run by
  ``run_main`` (one worker). Bytewax needs ``datetime`` timestamps, so each record carries one,
  made before any clock starts. When Bytewax is missing, the table says so and the rest runs.
"""

from __future__ import annotations

import argparse
import functools
import math
import operator
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import pipeline as pl
from .common import median_times, print_table, progress

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
WINDOW = 10.0
DELAY = 1.0
USERS = 100

Record = tuple[float, datetime, str]
Counts = list[tuple[str, float, int]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=1_000_000, help="records per run (1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown")


def make_records(n: int, seed: int = 4) -> list[Record]:
    """About 1,000 records per second of event time, each up to 0.5 s out of order."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        t = i / 1000 + rng.random() * 0.5
        records.append((t, EPOCH + timedelta(seconds=t), f"u{rng.randrange(USERS)}"))
    return records


def floor_counts(records: list[Record]) -> Counts:
    counts: dict[tuple[str, float], int] = {}
    for t, _, user in records:
        w = (user, math.floor(t / WINDOW) * WINDOW)
        counts[w] = counts.get(w, 0) + 1
    return [(user, start, n) for (user, start), n in counts.items()]


def _count(pair: tuple[str, pl.Window]) -> tuple[str, float, int]:
    return pair[0], pair[1].start, len(pair[1].records)


def minipool_counts(records: list[Record]) -> Counts:
    windows = pl.window(
        seconds=WINDOW, key=operator.itemgetter(2), timestamp=operator.itemgetter(0), delay=DELAY
    )
    result: Counts = (pl.source(records) | windows | pl.map(_count)).run()
    return result


def bytewax_runner() -> Callable[[list[Record]], Counts] | str:
    """A function running the Bytewax flow, or why Bytewax cannot run here."""
    try:
        import bytewax.operators as op
        import bytewax.operators.windowing as win
        from bytewax.dataflow import Dataflow
        from bytewax.testing import TestingSink, TestingSource, run_main
    except ImportError as exc:
        return f"not installed ({exc.name}): pip install bytewax (the bench extra)"

    def run(records: list[Record]) -> Counts:
        flow = Dataflow("window_count")
        stream = op.input("records", flow, TestingSource(records, batch_size=256))
        clock = win.EventClock(operator.itemgetter(1), wait_for_system_duration=timedelta(seconds=DELAY))
        windower = win.TumblingWindower(length=timedelta(seconds=WINDOW), align_to=EPOCH)
        counted = win.count_window("count", stream, clock, windower, operator.itemgetter(2))
        out: list[Any] = []
        op.output("out", counted.down, TestingSink(out))
        run_main(flow)
        return [(user, window_id * WINDOW, n) for user, (window_id, n) in out]

    return run


def run(args: argparse.Namespace) -> dict[str, Any]:
    progress(f"making {args.records:,} records")
    records = make_records(args.records)
    engines: dict[str, Callable[[list[Record]], Counts]] = {
        "floor": floor_counts,
        "minipool": minipool_counts,
    }
    bytewax = bytewax_runner()
    if callable(bytewax):
        engines["bytewax"] = bytewax
    else:
        progress(f"bytewax: {bytewax}")
    answers = {name: sorted(fn(records)) for name, fn in engines.items()}  # also a warm-up
    expected = answers["floor"]
    agree = {name: answer == expected for name, answer in answers.items()}
    progress(f"{len(expected):,} windows; timing {', '.join(engines)} x{args.repeat}")
    runs: dict[str, Callable[[], object]] = {
        name: functools.partial(fn, records) for name, fn in engines.items()
    }
    seconds = median_times(runs, args.repeat)
    rows = []
    for name, secs in seconds.items():
        vs_bytewax = seconds["bytewax"] / secs if "bytewax" in seconds else "-"
        rows.append([name, secs, args.records / secs, vs_bytewax, "yes" if agree[name] else "NO"])
    if not callable(bytewax):
        rows.append(["bytewax", "-", "-", "-", bytewax])
    print_table(
        f"Tumbling {WINDOW:.0f}-second event-time window count per user, {args.records:,} records "
        f"(median of {args.repeat}; vs bytewax = its seconds / these seconds)",
        ["engine", "seconds", "records/s", "vs bytewax", "same answer"],
        rows,
    )
    return {
        "records": args.records,
        "windows": len(expected),
        "seconds": seconds,
        "same_answer": agree,
        "bytewax": "measured" if callable(bytewax) else bytewax,
    }
