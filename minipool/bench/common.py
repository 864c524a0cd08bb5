"""Helpers shared by the benchmarks: repeat-and-median timing, tables, JSON, progress lines."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "median_time",
    "format_table",
    "print_table",
    "write_json",
    "progress",
    "machine_info",
    "CAN_PIN",
    "pin",
    "on_one_core",
]


#: Whether threads can be pinned to cores here (Linux, 2 cores or more): see :func:`on_one_core`.
CAN_PIN = (
    hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task") and len(os.sched_getaffinity(0)) > 1
)


def pin(pids: list[int], cpus: set[int]) -> None:
    """Move every thread of ``pids`` onto ``cpus`` (``sched_setaffinity`` sets one thread)."""
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:  # the thread ended meanwhile
                pass


@contextlib.contextmanager
def on_one_core(pids: list[int]) -> Iterator[None]:
    """Run the block with every thread of ``pids`` on one core, then put each process back.

    On a virtual machine a wake-up that crosses cores can cost more than a small message's
    whole software path, and where the scheduler places two processes is settled when they
    start: pinned, a round trip measures the code, not that lottery (docs/benchmarks.md).
    """
    before = {pid: os.sched_getaffinity(pid) for pid in pids}
    pin(pids, {max(os.sched_getaffinity(0))})
    try:
        yield
    finally:
        for pid, cpus in before.items():
            pin([pid], cpus)


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def median_time(fn: Callable[[], object], repeat: int = 5) -> float:
    """Run ``fn`` ``repeat`` times and return the median wall-clock seconds of one run."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_times(fns: dict[str, Callable[[], object]], repeat: int = 5) -> dict[str, float]:
    """Like :func:`median_time` for several implementations, taking turns: round after round,
    each runs once, so a noisy spell on a shared machine hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into docs/benchmarks.md)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
            )
            + " |"
        )

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n{title}\n")
    print(format_table(headers, rows))
    sys.stdout.flush()


def progress(message: str) -> None:
    """One progress line on stderr, so stdout stays a clean table."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_json(path: str | None, name: str, results: Any) -> None:
    """Write ``results`` with the machine's description to ``path`` (if given)."""
    if not path:
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"benchmark": name, "machine": machine_info(), "results": results}, f, indent=2)
    print(f"\nwrote {path}")
