"""What a message costs to answer in a process whose other thread computes: the GIL's handoff.

Technique measured: *the switch interval*. A worker whose task keeps children computes in one
thread while another (a stand-in) reads the coordinator's STEAL and answers it with a SUBMIT
(:mod:`minipool.cluster.stealing`). The reader needs the GIL after each system call: after the
poll that saw the message, after the read, after the send. The computing thread lets go of the
GIL only when a waiting thread has waited ``sys.getswitchinterval()`` seconds (5 ms by default)
and asked for it; so every system call of the reader costs up to one interval, and an idle slot
elsewhere waits for the sum. minipool lowers the interval of a worker while its tasks keep
children (:data:`minipool.cluster.nesting.STEAL_SWITCH_INTERVAL`).

Measured here, in one run: a process echoes a small message from a thread of its own while
another of its threads computes a pure-Python recursion, once for each switch interval; beside
the same echo from a process with nothing else to do (the floor: two hops and two thread
wake-ups). A median and a 90th percentile of ``--echoes`` round trips each, from a socketpair.

    python -m minipool.bench handoff --echoes 300
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import sys
import threading
import time
from typing import Any

from .common import positive, print_table, progress

__all__ = ["INTERVALS", "add_arguments", "run"]

#: Switch intervals measured (seconds): Python's default, minipool's until this version, and now.
INTERVALS = (0.005, 0.0002, 0.00002)


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def _echo(sock: socket.socket, interval: float | None) -> None:
    """Echo until the peer closes; with ``interval``, beside a thread that computes, under that
    switch interval."""
    if interval is not None:
        sys.setswitchinterval(interval)

        def compute() -> None:
            while True:
                _fib(18)

        threading.Thread(target=compute, daemon=True).start()
    while data := sock.recv(64):
        sock.sendall(data)


def echo_times(interval: float | None, echoes: int) -> list[float]:
    """Seconds of each round trip to an echoing process (see :func:`_echo`), sorted."""
    ours, theirs = socket.socketpair()
    process = multiprocessing.get_context("spawn").Process(target=_echo, args=(theirs, interval), daemon=True)
    process.start()
    theirs.close()
    try:
        ours.sendall(b"warm up")
        ours.recv(64)
        times = []
        for _ in range(echoes):
            started = time.perf_counter()
            ours.sendall(b"STEAL")
            ours.recv(64)
            times.append(time.perf_counter() - started)
            time.sleep(0.001)  # (the message finds the reader asleep, as a STEAL does)
        return sorted(times)
    finally:
        ours.close()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--echoes", type=positive, default=300, help="round trips per row (default 300)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows, results = [], {}
    for interval in (None, *INTERVALS):
        label = (
            "idle (no computing thread)" if interval is None else f"computing, interval {interval * 1e6:g} µs"
        )
        progress(label)
        times = echo_times(interval, args.echoes)
        median, p90 = statistics.median(times), times[int(0.9 * (len(times) - 1))]
        results[label] = {"median_us": median * 1e6, "p90_us": p90 * 1e6}
        rows.append([label, median * 1e6, p90 * 1e6])
    print_table(
        f"An echo from a process whose other thread computes ({args.echoes} round trips each)",
        ["the echoing process", "median (µs)", "p90 (µs)"],
        rows,
    )
    return results
