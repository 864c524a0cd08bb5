"""Backups without stalls (seed 001's open problem 3): exchange latency while the centre backs up.

Technique: *measure the tail, with and without the disturbance, in the same run*. The paper's
global pipe centre backs up its state now and then, and notes that a backup stalls the
exchange channels. minipool's centre backs up the positions of its consumer groups (a snapshot
of their journal, :mod:`minipool.topics.positions`); the records themselves are in append-only
segment files and need no backup. The bench opens the topics as a journaled coordinator does
(``--fsync everysec``), with ``--groups`` consumer groups of 4 partitions each besides the one
that works (what a snapshot has to hold), and one thread makes the exchange a pipe set makes,
timing each one: append a batch of ``--batch`` records to ``in``, fetch it as a group member,
and send one step (outputs to ``out``, inputs acknowledged). Phases of ``--seconds`` take turns:

* **steady**: nothing else runs;
* **snapshot under the lock**: a thread snapshots back to back as the centre once did, holding
  the lock every channel takes while it writes and fsyncs (the peer);
* **backup**: a thread calls ``TopicService.backup()`` back to back: the lock is held only to
  copy the positions and start the next log; the copy is written and fsynced outside it.

Reported per phase: exchanges, p50, p99 and the largest latency in microseconds, snapshots
made, how long each held the lock (median and longest), and p99 over the steady p99 (the goal:
at most 2). Phases are short and take turns ``--rounds`` times, so a loaded machine disturbs
each alike; the latencies of a phase's rounds are pooled.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from ..topics.records import Buffer, pack_entries, unpack_chunks
from ..topics.service import TopicService
from ..topics.topic import TopicConfig
from .common import print_table, progress

__all__ = ["add_arguments", "run", "exchange_latencies"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--groups", type=int, default=500, help="consumer groups the snapshot holds")
    parser.add_argument("--batch", type=int, default=10, help="records per exchange")
    parser.add_argument("--seconds", type=float, default=0.5, help="seconds per phase and round")
    parser.add_argument("--rounds", type=int, default=12, help="turns of the three phases")


def _blocking_snapshot(service: TopicService) -> float | None:
    """A snapshot as the centre made one before backups left the lock: all of it under it.
    Returns the seconds the lock was held, as ``TopicService.backup()`` does."""
    positions = service.positions
    assert positions is not None
    with service.cond:
        started = time.perf_counter()
        backup = positions.begin_backup(service.groups)
        if backup is not None:
            positions.finish_backup(backup)
        held = time.perf_counter() - started
    return None if backup is None else held


def exchange_latencies(
    service: TopicService, seconds: float, batch: int, backup: Callable[[TopicService], float | None] | None
) -> tuple[list[float], list[float]]:
    """Time each exchange for ``seconds`` while ``backup`` (if any) runs back to back; the
    latencies, and the seconds each snapshot held the lock."""
    stop = threading.Event()
    held: list[float] = []

    def backing_up() -> None:
        while backup is not None and not stop.is_set():
            seconds = backup(service)
            if seconds is not None:
                held.append(seconds)

    thread = threading.Thread(target=backing_up, daemon=True)
    if backup is not None:
        thread.start()
    latencies = []
    values: list[tuple[Buffer | None, Buffer]] = [(None, b"x" * 100)] * batch
    fetch = {"topic": "in", "group": "work", "reset": "earliest", "max": batch}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        service.produce("in", values)
        records = unpack_chunks("in", service.fetch("m", "m", fetch))
        acks = [[r.partition, r.offset, r.offset + 1] for r in records]
        step = {"topic": "in", "group": "work", "acks": acks, "outputs": [["out", len(records)]]}
        service.transact(step, pack_entries([(None, r.value) for r in records]))
        latencies.append(time.perf_counter() - started)
    stop.set()
    if backup is not None:
        thread.join()
    return latencies, held


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    phases: dict[str, Callable[[TopicService], float | None] | None] = {
        "steady": None,
        "snapshot under the lock": _blocking_snapshot,
        "backup()": TopicService.backup,
    }
    pooled: dict[str, list[float]] = {name: [] for name in phases}
    held: dict[str, list[float]] = {name: [] for name in phases}
    with tempfile.TemporaryDirectory(prefix="minipool-bench-backups-") as directory:
        service = TopicService(directory, fsync="everysec")
        try:
            filler = service.topic("filler", TopicConfig(partitions=4))
            with service.cond:
                for i in range(args.groups):
                    service.group(filler, f"group-{i}", "earliest")
            for round_ in range(args.rounds):
                for name, backup in phases.items():
                    progress(f"round {round_ + 1}/{args.rounds}: {name}")
                    latencies, lock_held = exchange_latencies(service, args.seconds, args.batch, backup)
                    pooled[name] += latencies
                    held[name] += lock_held
        finally:
            service.close()
    steady_p99 = _percentile(pooled["steady"], 0.99)
    rows, results = [], {}
    for name, latencies in pooled.items():
        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        results[name] = {
            "exchanges": len(latencies),
            "p50_us": p50 * 1e6,
            "p99_us": p99 * 1e6,
            "max_us": max(latencies) * 1e6,
            "mean_us": statistics.fmean(latencies) * 1e6,
            "snapshots": len(held[name]),
            "lock_held_p50_us": statistics.median(held[name]) * 1e6 if held[name] else 0.0,
            "lock_held_max_us": max(held[name], default=0.0) * 1e6,
            "p99_over_steady": p99 / steady_p99,
        }
        r = results[name]
        rows.append(
            [
                name,
                f"{r['exchanges']:,}",
                f"{r['p50_us']:,.0f}",
                f"{r['p99_us']:,.0f}",
                f"{r['max_us']:,.0f}",
                f"{r['snapshots']:,}",
                f"{r['lock_held_p50_us']:,.0f} / {r['lock_held_max_us']:,.0f}",
                f"{r['p99_over_steady']:.2f}",
            ]
        )
    print_table(
        f"exchange latency (append {args.batch}, fetch, step) with {args.groups} groups to back up,"
        f" {args.rounds} x {args.seconds:g} s per phase",
        [
            "phase",
            "exchanges",
            "p50 us",
            "p99 us",
            "max us",
            "snapshots",
            "lock held p50 / max us",
            "p99 / steady",
        ],
        rows,
    )
    return {"groups": args.groups, "batch": args.batch, "phases": results}
