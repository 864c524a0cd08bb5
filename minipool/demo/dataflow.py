"""Tour steps on data that flows: shard and merge, pipeline stage kinds, and streaming windows
(seeds 000 §3.4-3.5, 001 and 004).

Each step checks the pipeline's answer against a plain Python loop and times both in turns:
a pipeline organises work (state per shard, stages that overlap, windows over an endless
stream); it is faster only where its stages wait or run on other cores, and the steps say so.
"""

from __future__ import annotations

import collections
import functools
import operator
import random
from collections.abc import Callable, Iterator
from typing import Any

from .. import pipeline as pl
from ..bench.pipeline import await_, spin, wait
from .step import COLUMNS, Context, Outcome, alternate, beyond_workers, machine_load

__all__ = ["shard", "pipeline", "streaming"]


def words(count: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(500)]
    return rng.choices(vocabulary, [1 / (r + 1) for r in range(500)], k=count)


def shard(ctx: Context) -> Outcome:
    count = ctx.size(100_000, 1_000_000)
    data = words(count)
    shards = 4

    def sharded() -> dict[str, int]:
        partials = (
            pl.source(data)
            | pl.map(lambda w: (w, 1))
            | pl.shard(shards, key=operator.itemgetter(0), then=pl.reduce_by_key(operator.add))
        ).run()
        merged: dict[str, int] = {}
        for part in partials:
            merged.update(part if isinstance(part, dict) else [part])
        return merged

    seconds, values = alternate(
        {"serial Counter": lambda: collections.Counter(data), "shard + merge": sharded}, 5
    )
    assert dict(values["serial Counter"]) == values["shard + merge"], "the shards lost or doubled a count"
    ratio = seconds["serial Counter"] / seconds["shard + merge"]
    rows = [
        ["serial Counter", 1, count, seconds["serial Counter"], 1.0],
        [f"shard({shards}) + merge", shards, count, seconds["shard + merge"], ratio],
    ]
    notes = [f"{len(values['shard + merge'])} distinct words, every count equal to the serial Counter's"]
    return Outcome(
        COLUMNS + ["vs serial"],
        rows,
        f"every count right; {ratio:.2f}x the serial speed in one process",
        "Sharding by key gives each key one home, so the partial counts merge without a clash and "
        "nothing is counted twice. "
        + (
            f"It does not pay in one process ({ratio:.2f}x serial here): the "
            if ratio < 1.15
            else f"The {ratio:.2f}x measured here is noise from other work on the machine "
            f"({machine_load()[1]}): "
            "it cannot pay in one process, where the "
        )
        + f"{shards} shards are threads under one GIL and every record pays the stages' hand-offs. "
        "Sharding is for state that must be split -- shards on different machines, each holding "
        "a part of the data too big for one -- not for speed on one core.",
        {name: s for name, s in seconds.items()},
        "seconds",
        notes,
        peer="serial Counter",
    )


def _runner(build: Callable[[], pl.Pipeline]) -> Callable[[], Any]:
    return lambda: build().run()


def _spin_all(records: list[int]) -> list[int]:
    return [spin(n) for n in records]


def pipeline(ctx: Context) -> Outcome:
    cpu = [20_000] * ctx.size(150, 800)
    io = list(range(ctx.size(12, 60)))
    pool = ctx.pool()
    workers = ctx.workers
    cases: dict[str, tuple[int, list[int], Callable[[], Any]]] = {
        "CPU: a plain loop, no pipeline": (1, cpu, functools.partial(_spin_all, cpu)),
        "CPU: thread, 1 worker": (1, cpu, _runner(lambda: pl.source(cpu) | pl.map(spin))),
        f"CPU: thread, {workers} workers": (
            workers,
            cpu,
            _runner(lambda: pl.source(cpu) | pl.map(spin, workers=workers)),
        ),
        f"CPU: process, {workers} workers": (
            workers,
            cpu,
            _runner(lambda: pl.source(cpu) | pl.map(spin, kind="process", workers=workers)),
        ),
        f"CPU: minipool Pool as executor, {workers} workers": (
            workers,
            cpu,
            _runner(lambda: pl.source(cpu) | pl.map(spin, executor=pool, workers=workers)),
        ),
        "I/O: thread, 1 worker": (1, io, _runner(lambda: pl.source(io) | pl.map(wait))),
        "I/O: thread, 16 workers": (16, io, _runner(lambda: pl.source(io) | pl.map(wait, workers=16))),
        "I/O: coroutine, 16 workers": (
            16,
            io,
            _runner(lambda: pl.source(io) | pl.map(await_, kind="async", workers=16)),
        ),
    }
    seconds, _ = alternate({name: run for name, (_, _, run) in cases.items()}, 3)
    rows: list[list[Any]] = []
    gains: list[float] = []
    for name, (n, records, _) in cases.items():
        base = seconds[
            "CPU: a plain loop, no pipeline" if name.startswith("CPU") else "I/O: thread, 1 worker"
        ]
        gains.append(base / seconds[name])
        rows.append([name, n, len(records), seconds[name], gains[-1]])
    one_thread, cpu_threads, cpu_procs, cpu_pool, io_async = gains[1], gains[2], gains[3], gains[4], gains[7]
    busy, load = machine_load()
    return Outcome(
        COLUMNS + ["vs the baseline"],
        rows,
        f"CPU vs a plain loop: processes {cpu_procs:.2f}x ({cpu_pool:.2f}x warm), threads "
        f"{cpu_threads:.2f}x; I/O: coroutines {io_async:.1f}x one thread",
        "CPU rows are measured against a plain loop, I/O rows against one thread. Pure-Python CPU "
        "work holds the GIL, so "
        + (
            f"{workers} threads give no more CPU than the loop ({cpu_threads:.2f}x); "
            if cpu_threads < 1.15
            else f"the {cpu_threads:.2f}x of {workers} threads is not CPU they added (a thread runs "
            f"Python only while it holds the GIL): on a machine this busy ({load}), runs of a few "
            "tenths of a second vary that much; "
        )
        + (
            f"one thread ran at {one_thread:.2f}x, paying for every hand-off between stages under the "
            "GIL, which a second thread hides. "
            if one_thread < 0.87
            else "one thread costs about what the loop does. "
        )
        + (
            f"{workers} processes pay once started ({cpu_pool:.2f}x on the warm pool; "
            f"{cpu_procs:.2f}x for a stage that starts its own"
            + (
                ": its processes' start-up and per-record hand-offs count against it on a run this short). "
                if cpu_procs < 1.15
                else "). "
            )
            if cpu_pool >= 1.15
            else f"{workers} processes gave {cpu_procs:.2f}x with their start-up and {cpu_pool:.2f}x on the "
            f"warm pool ({load}): "
            + ("there is no idle core to gain. " if busy else "these tasks are too small at this size. ")
        )
        + beyond_workers(cpu_pool, workers).lstrip()
        + (" " if cpu_pool > workers * 1.1 else "")
        + f"Work that waits overlaps on threads or coroutines ({io_async:.1f}x with 16), with no "
        "process needed. Pick the stage kind by what the stage spends its time on.",
        {name: s for name, s in seconds.items()},
        "seconds",
        peer="CPU: a plain loop, no pipeline",
    )


def events(count: int, seed: int = 4) -> Iterator[tuple[float, int]]:
    """``(event time, status)`` of ``count`` requests, 100 per second, with a 10 s outage a minute."""
    rng = random.Random(seed)
    for n in range(count):
        ts = n / 100
        outage = 30 <= ts % 60 < 40
        yield ts, 500 if rng.random() < (0.4 if outage else 0.01) else 200


def streaming(ctx: Context) -> Outcome:
    count = ctx.size(30_000, 200_000)
    ts = operator.itemgetter(0)

    def windows() -> list[tuple[float, int, int]]:
        per_window = pl.window(seconds=30, timestamp=ts)
        return (
            pl.source(lambda: events(count))
            | per_window
            | pl.map(lambda w: (w.start, len(w.records), sum(1 for _, s in w.records if s >= 500)))
        ).run()

    def loop() -> list[tuple[float, int, int]]:
        out: dict[float, list[int]] = {}
        for t, status in events(count):
            cell = out.setdefault(t // 30 * 30, [0, 0])
            cell[0] += 1
            cell[1] += status >= 500
        return [(start, n, errors) for start, (n, errors) in sorted(out.items())]

    def alerts() -> list[int]:
        errors = pl.source(lambda: events(count)) | pl.filter(lambda e: e[1] >= 500)
        return (errors | pl.rolling(len, seconds=10, timestamp=ts) | pl.filter(lambda n: n == 100)).run()

    seconds, values = alternate(
        {"plain loop": loop, "pl.window(seconds=30)": windows, "pl.rolling(seconds=10)": alerts}, 3
    )
    got = [tuple(w) for w in values["pl.window(seconds=30)"]]
    assert got == values["plain loop"], "the windows disagree with the plain loop"
    base = seconds["plain loop"]
    rows: list[list[Any]] = [[name, 1, count, s, count / s, base / s] for name, s in seconds.items()]
    window_gain = base / seconds["pl.window(seconds=30)"]
    notes = [f"window at {t:5.0f} s: {n:5} requests, {errors:4} errors" for t, n, errors in got[:6]]
    notes.append(
        f"rolling 10 s error count reached 100 {len(values['pl.rolling(seconds=10)'])} times "
        "(once per outage)"
    )
    return Outcome(
        COLUMNS + ["records/s", "vs plain loop"],
        rows,
        f"{count / seconds['pl.window(seconds=30)']:,.0f} records/s in windows, "
        f"{window_gain:.2f}x a plain loop",
        "Windows cut an endless stream into finite groups by event time, so each group can be "
        "aggregated and emitted while the stream goes on (the outage windows stand out); a rolling "
        "aggregate updates with every record and raises an alert the moment it crosses a line. The "
        f"stages cost {1 / window_gain:.1f}x a hand-written loop: the price of stages that can be "
        "swapped, checkpointed and run on workers.",
        {name: count / s for name, s in seconds.items()},
        "records per second",
        notes,
        peer="plain loop",
    )
