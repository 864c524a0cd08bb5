"""Dispatch: how many tasks per second reach a worker and come back, minipool vs the stdlib pools.

Measured in one run, each pool with the same number of local worker processes:

* ``submit``: N no-op tasks submitted one by one, then all results awaited (one message each way
  per task) -- ``Pool.submit`` vs ``ProcessPoolExecutor.submit`` vs
  ``multiprocessing.Pool.imap_unordered(chunksize=1)``; and the CPU time this process (the
  client, and for minipool the embedded coordinator; for ``multiprocessing`` its task and
  result threads) spends per task, all its threads together: the GIL runs them one at a time,
  so on a quiet machine that is the bound on the rate, and it moves less with the load of the
  machine than the rate does;
* ``round trip``: one task at a time, submit to result -- ``Pool.submit(...).result()`` vs
  ``multiprocessing.Pool.apply`` vs ``ProcessPoolExecutor.submit(...).result()``;
* ``map``: ``list(map(noop, range(M)))`` with automatic chunking vs ``multiprocessing.Pool.map``
  (which chunks by length and returns the list) and ``ProcessPoolExecutor.map(chunksize=M/(4*workers))``;
* ``journal``: the submit test again with the coordinator's write-ahead journal at each fsync
  policy (``everysec``, ``always``), beside the same pool without one;
* ``dashboard``: the submit and round-trip tests with the embedded coordinator's dashboard open
  and a WebSocket client reading its live feed, beside the same pool without one;
* ``memory``: ``Pool.map`` over an endless-style generator of ``--stream`` items: peak RSS growth
  and the time to the first result;
* ``nested``: a submit from inside a task vs from the client, and recursive Fibonacci on the
  pool vs serial vs ``ProcessPoolExecutor`` (which deadlocks): see :mod:`minipool.bench.nested`;
* ``path``: the embedded pool's path in the coordinator's process without sockets, CPU per task
  by phase: see :mod:`minipool.bench.dispatch_path`.

Every figure is a median of ``--repeat`` runs; the ratio column compares with the named peer.
All the pools are started first and then take turns, round after round, test by test: on a
shared, noisy machine a quiet or a busy spell then falls on every implementation alike.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import multiprocessing
import resource
import statistics
import time
from typing import Any

from . import dispatch_path, nested
from .common import format_table, median_times, positive, print_table, progress


def noop(x: Any = None) -> Any:
    return x


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="worker processes per pool (default 2)")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks in the submit test")
    parser.add_argument("--trips", type=int, default=500, help="one-at-a-time round trips")
    parser.add_argument("--map-items", type=int, default=1_000_000, help="items in the map test")
    parser.add_argument(
        "--stream", type=int, default=10_000_000, help="items in the streaming-memory test (0 to skip)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument(
        "--journal-tasks", type=int, default=10_000, help="tasks in the journal test (0 to skip)"
    )
    parser.add_argument("--nested-submits", type=positive, default=5000, help="submits from inside a task")
    parser.add_argument(
        "--fib", default="27,18", help="recursive Fibonacci's n and serial cutoff (default 27,18)"
    )
    parser.add_argument(
        "--path-tasks", type=int, default=20_000, help="tasks in the path-without-sockets test (0 to skip)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--no-dashboard", dest="dashboard", action="store_false", help="skip the dashboard's cost"
    )


def _submit_all(executor: concurrent.futures.Executor, n: int) -> None:
    futures = [executor.submit(noop, i) for i in range(n)]
    for f in futures:
        f.result()


def _cpu_counted(fn: Any, spent: list[float]) -> Any:
    """``fn``, noting the CPU time this process spends in each call (all its threads)."""

    def run() -> None:
        start = time.process_time()
        fn()
        spent.append(time.process_time() - start)

    return run


def _trips(call: Any, n: int) -> None:
    for i in range(n):
        call(i)


def _peak_rss_kb() -> int:
    """This process's peak resident set, in KB. Linux's VmHWM belongs to the process's own
    address space; ``ru_maxrss`` would also count the parent's size before ``exec``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _stream_memory(workers: int, items: int, report: Any) -> None:
    """In a process of its own (so that the peak RSS is this test's alone): ``Pool.map`` over a
    generator, sent to ``report`` as peak RSS growth and the time to the first result."""
    from ..pool import Pool

    with Pool(workers) as pool:
        pool.wait_for_workers()
        before = _peak_rss_kb()
        start = time.perf_counter()
        first = None
        count = 0
        for _ in pool.map(noop, (i for i in range(items)), chunksize=None):
            if first is None:
                first = time.perf_counter() - start
            count += 1
        elapsed = time.perf_counter() - start
        growth_kb = _peak_rss_kb() - before
    assert count == items
    report.send(
        {
            "items": items,
            "seconds": elapsed,
            "first_result_s": first or 0.0,
            "peak_rss_growth_mb": growth_kb / 1024,
        }
    )


def _stream_memory_apart(workers: int, items: int) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    receive, report = spawn.Pipe(duplex=False)
    child = spawn.Process(target=_stream_memory, args=(workers, items, report), name="minipool-bench-memory")
    child.start()
    try:
        return receive.recv()
    finally:
        child.join()


def _journal_rates(workers: int, n: int, repeat: int) -> dict[str, float]:
    import tempfile

    from ..pool import Pool

    progress("journal: none, everysec, always, taking turns")
    with contextlib.ExitStack() as stack:
        pools = {}
        for fsync in ("none", "everysec", "always"):  # their workers start side by side
            directory = None if fsync == "none" else stack.enter_context(tempfile.TemporaryDirectory())
            pools[fsync] = stack.enter_context(
                Pool(workers, journal=directory, fsync="everysec" if fsync == "none" else fsync)
            )
        for pool in pools.values():
            pool.wait_for_workers()
            _submit_all(pool, 200)
        times = median_times(
            {name: functools.partial(_submit_all, p, n) for name, p in pools.items()}, repeat
        )
    return {name: n / t for name, t in times.items()}


def _read_feed(conn: Any) -> None:
    """A browser's part: read every update the dashboard's feed sends, until it closes."""
    from ..errors import MinipoolError

    try:
        while True:
            conn.recv()
    except (MinipoolError, OSError):
        pass


class _Watched:
    """A dashboard opened on a running pool's coordinator, with a WebSocket client reading its
    live feed in this process (a browser's part), until closed."""

    def __init__(self, pool: Any) -> None:
        import threading
        from urllib.parse import urlsplit

        from ..dashboard import Dashboard
        from ..transports.base import Options
        from ..transports.websocket import connect

        self.dashboard = Dashboard(pool._coordinator, supervisor=pool._supervisor)
        url = self.dashboard.serve("bench")
        self.feed = connect(urlsplit(url.replace("http", "ws", 1) + "/ws"), Options(), origin=url)
        threading.Thread(
            target=_read_feed, args=(self.feed,), daemon=True, name="minipool-bench-feed"
        ).start()

    def close(self) -> None:
        self.feed.close()
        self.dashboard.close()


def _dashboard_rates(
    workers: int, n: int, trips: int, repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The same pool measured with and without a dashboard, in turns: one pool, so that no
    difference between two pools' processes is taken for the dashboard's cost; the order of
    the two flips every round. Beside each rate, this process's CPU time per task (all its
    threads: the coordinator, the dashboard's, the feed's reader), steadier than a rate on a
    shared machine."""

    from ..pool import Pool

    progress("dashboard: one pool, with and without a dashboard and a live feed, taking turns")
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    tests = {
        "submit": (lambda pool: _submit_all(pool, n), n),
        "round trip": (lambda pool: _trips(lambda i: pool.submit(noop, i).result(), trips), trips),
    }
    with Pool(workers) as pool:
        pool.wait_for_workers()
        _submit_all(pool, 200)
        for round_ in range(repeat):
            for watched in (True, False) if round_ % 2 else (False, True):
                watcher = _Watched(pool) if watched else None
                try:
                    for test, (fn, count) in tests.items():
                        name = f"{test} {'with' if watched else 'without'}"
                        spent, start = time.process_time(), time.perf_counter()
                        fn(pool)
                        times.setdefault(name, []).append(time.perf_counter() - start)
                        cpu.setdefault(name, []).append((time.process_time() - spent) / count)
                finally:
                    if watcher is not None:
                        watcher.close()
    rates = {
        name: (n if name.startswith("submit") else trips) / statistics.median(values)
        for name, values in times.items()
    }
    return rates, {name: 1e6 * statistics.median(values) for name, values in cpu.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..pool import Pool

    if args.quick:
        args.tasks, args.trips, args.map_items, args.stream, args.repeat = 2000, 100, 100_000, 50_000, 1
        args.journal_tasks = min(args.journal_tasks, 1000)
        args.nested_submits, args.fib = 500, "20,14"
        args.path_tasks = min(args.path_tasks, 2000)
    w, n, trips, m, rep = args.workers, args.tasks, args.trips, args.map_items, args.repeat
    spawn = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        progress(f"starting minipool Pool({w}), multiprocessing.Pool({w}), ProcessPoolExecutor({w})")
        pool = stack.enter_context(Pool(w))
        mp = stack.enter_context(spawn.Pool(w))
        ppe = stack.enter_context(concurrent.futures.ProcessPoolExecutor(w, mp_context=spawn))
        pool.wait_for_workers()
        _submit_all(pool, 200)  # warm up: connections, caches
        mp.map(noop, range(200))
        _submit_all(ppe, 200)
        progress("submit")
        cpu: dict[str, list[float]] = {"minipool": [], "mp": []}
        times = median_times(
            {
                "minipool submit": _cpu_counted(lambda: _submit_all(pool, n), cpu["minipool"]),
                "mp imap_unordered(chunksize=1)": _cpu_counted(
                    lambda: sum(1 for _ in mp.imap_unordered(noop, range(n), chunksize=1)), cpu["mp"]
                ),
                "ppe submit": lambda: _submit_all(ppe, n),
            },
            rep,
        )
        rates = {name: n / t for name, t in times.items()}
        cpu_us = {name: 1e6 * statistics.median(spent) / n for name, spent in cpu.items()}
        progress("round trip")
        times = median_times(
            {
                "minipool round trip": lambda: _trips(lambda i: pool.submit(noop, i).result(), trips),
                "mp apply": lambda: _trips(lambda i: mp.apply(noop, (i,)), trips),
                "ppe round trip": lambda: _trips(lambda i: ppe.submit(noop, i).result(), trips),
            },
            rep,
        )
        rates.update({name: trips / t for name, t in times.items()})
        progress("map")
        chunk = max(1, m // (4 * w))
        # Each ends with the list of results, as multiprocessing.Pool.map returns it: the
        # executors' iterators are drained by list(), not by a Python loop per item.
        times = median_times(
            {
                "minipool map": lambda: list(pool.map(noop, range(m), chunksize=None)),
                "mp map": lambda: mp.map(noop, range(m)),
                "ppe map": lambda: list(ppe.map(noop, range(m), chunksize=chunk)),
            },
            rep,
        )
        rates.update({name: m / t for name, t in times.items()})
        mp.terminate()
        progress("nested: submits from a task, recursive Fibonacci, ProcessPoolExecutor's deadlock")
        fib_n, fib_cutoff = (int(x) for x in args.fib.split(","))
        recursion = nested.measure(
            pool, w, args.nested_submits, fib_n, fib_cutoff, rep, 1.0 if args.quick else 3.0
        )

    memory = None
    if args.stream:
        progress(f"memory: Pool.map over a generator of {args.stream:,} items, in a fresh process")
        memory = _stream_memory_apart(w, args.stream)
    rows = [
        [
            "submit, 1 task per message",
            rates["minipool submit"],
            "mp imap_unordered(chunksize=1)",
            rates["mp imap_unordered(chunksize=1)"],
            rates["minipool submit"] / rates["mp imap_unordered(chunksize=1)"],
        ],
        [
            "submit, 1 task per message",
            rates["minipool submit"],
            "ProcessPoolExecutor.submit",
            rates["ppe submit"],
            rates["minipool submit"] / rates["ppe submit"],
        ],
        [
            "submit: this process's CPU per task (µs)",
            cpu_us["minipool"],
            "mp imap_unordered(chunksize=1)",
            cpu_us["mp"],
            cpu_us["mp"] / cpu_us["minipool"],
        ],
        [
            "round trip (µs)",
            1e6 / rates["minipool round trip"],
            "multiprocessing.Pool.apply",
            1e6 / rates["mp apply"],
            rates["minipool round trip"] / rates["mp apply"],
        ],
        [
            "round trip (µs)",
            1e6 / rates["minipool round trip"],
            "ProcessPoolExecutor.submit().result()",
            1e6 / rates["ppe round trip"],
            rates["minipool round trip"] / rates["ppe round trip"],
        ],
        [
            f"map {m:,} items, auto chunks",
            rates["minipool map"],
            "multiprocessing.Pool.map",
            rates["mp map"],
            rates["minipool map"] / rates["mp map"],
        ],
        [
            f"map {m:,} items, auto chunks",
            rates["minipool map"],
            "ProcessPoolExecutor.map",
            rates["ppe map"],
            rates["minipool map"] / rates["ppe map"],
        ],
        *nested.rows(recursion),
    ]
    print_table(
        f"Dispatch with {w} local worker processes (tasks/s unless noted; median of {rep};"
        " speed-up >1 means minipool is faster)",
        ["test", "minipool", "peer", "peer figure", "speed-up"],
        rows,
    )
    if memory:
        print_table(
            "Pool.map over a generator (chunksize=None)",
            ["items", "seconds", "first result (s)", "peak RSS growth (MB)"],
            [[memory["items"], memory["seconds"], memory["first_result_s"], memory["peak_rss_growth_mb"]]],
        )
    path = dispatch_path.measure(args.path_tasks, rep) if args.path_tasks else {}
    if path:
        print_table(
            f"The coordinator's process without sockets: CPU per task by phase (µs, {args.path_tasks:,}"
            f" tasks, the best of {rep})",
            [*dispatch_path.PHASES, "total"],
            [[path[phase] for phase in (*dispatch_path.PHASES, "total")]],
        )
    journal = _journal_rates(w, args.journal_tasks, rep) if args.journal_tasks else {}
    if journal:
        print_table(
            f"The coordinator's journal: submit rate of {args.journal_tasks:,} tasks (tasks/s,"
            f" median of {rep})",
            ["journal", "tasks/s", "vs no journal"],
            [[name, rate, rate / journal["none"]] for name, rate in journal.items()],
        )
    dashboard, dashboard_cpu = _dashboard_rates(w, n, trips, rep) if args.dashboard else ({}, {})
    if dashboard:
        print_table(
            f"A dashboard open with a live WebSocket client (tasks/s, and this process's CPU per"
            f" task, median of {rep})",
            ["test", "without", "with", "with / without", "CPU without (µs)", "CPU with (µs)"],
            [
                [
                    test,
                    dashboard[f"{test} without"],
                    dashboard[f"{test} with"],
                    dashboard[f"{test} with"] / dashboard[f"{test} without"],
                    dashboard_cpu[f"{test} without"],
                    dashboard_cpu[f"{test} with"],
                ]
                for test in ("submit", "round trip")
            ],
        )
    return {
        "workers": w,
        "rates": rates,
        "cpu_per_task_us": cpu_us,
        "path": path,
        "dashboard": dashboard,
        "dashboard_cpu_us": dashboard_cpu,  # this process's CPU per task, with and without
        "stream": memory,
        "journal": journal,
        "nested": recursion,
        "table": format_table(["test", "minipool", "peer", "peer figure", "speed-up"], rows),
    }
