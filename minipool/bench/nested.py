"""Tasks that submit tasks: what a submit from inside a task costs, and recursion that pays.

Three measurements, beside the dispatch table (``python -m minipool.bench dispatch``):

* ``nested submit``: N no-op tasks submitted by a task and all awaited there, timed inside the
  task, vs the same N submitted by the client (an embedded pool's, in-process): kept in the
  worker and run by the task as it waits (the default), and all through the coordinator
  (``current_pool(keep_children=False)``);
* ``recursive Fibonacci``: ``fib(n)`` whose calls above a cutoff are two child tasks, on a pool
  of two workers, vs the plain recursion in one process, each run beside the serial one: kept
  children and work stealing (the default), and every child through the coordinator. How many
  children went through the coordinator (stolen) and how many STEAL requests were sent, from
  the coordinator's counts;
* the same recursive program on ``ProcessPoolExecutor(2)``, whose workers reach it through a
  small server in the bench's process (a ``multiprocessing`` manager): two parents waiting on
  their children hold both workers, and nothing runs again. Shown with a timeout; then its
  processes are ended, and the bench checks that none is left.

``python -m minipool.bench nested`` runs the recursion alone, in rounds, each row a median of
many pairs beside the machine's load average: on a shared machine, the rows of its quiet
moments are the ones that say what the technique does. It also says how much CPU the workers
used per kept run (from ``/proc``, in clock ticks: a mean over the round's runs), which bounds
the speed-up on any machine: two workers cannot finish sooner than half of it.

    python -m minipool.bench nested --fib 27,18 --rounds 5 --pairs 15
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import secrets
import threading
import time
from multiprocessing.managers import BaseManager
from typing import Any

from ..nested import current_pool
from .common import print_table, progress

__all__ = ["fib", "fib_serial", "measure", "rows", "add_arguments", "run"]

#: How long the ProcessPoolExecutor run is given before it is declared deadlocked.
DEADLOCK_TIMEOUT = 3.0

_proxy: Any = None  # in a ProcessPoolExecutor worker: the pool, through the bench's server


def fib_serial(n: int) -> int:
    return n if n < 2 else fib_serial(n - 1) + fib_serial(n - 2)


def fib(n: int, cutoff: int, keep: bool = True) -> int:
    """Recursive Fibonacci: at or below ``cutoff`` in this task, above it as two children
    (``keep``: kept in the worker unless stolen; else through the coordinator)."""
    if n <= cutoff:
        return fib_serial(n)
    pool = current_pool(keep) if _proxy is None else _proxy
    a = pool.submit(fib, n - 1, cutoff, keep)
    b = pool.submit(fib, n - 2, cutoff, keep)
    return a.result() + b.result()


def children_of(n: int, cutoff: int) -> int:
    """How many child tasks ``fib(n, cutoff)`` submits."""
    return 0 if n <= cutoff else 2 + children_of(n - 1, cutoff) + children_of(n - 2, cutoff)


def noop(x: Any = None) -> Any:
    return x


def submit_inside(n: int, keep: bool = True) -> float:
    """Submit ``n`` no-op children and wait for them all; the seconds it took, from here."""
    pool = current_pool(keep)
    started = time.perf_counter()
    futures = [pool.submit(noop, i) for i in range(n)]
    for future in futures:
        future.result()
    return time.perf_counter() - started


def submit_outside(pool: concurrent.futures.Executor, n: int) -> float:
    started = time.perf_counter()
    futures = [pool.submit(noop, i) for i in range(n)]
    for future in futures:
        future.result()
    return time.perf_counter() - started


# -- the same program on ProcessPoolExecutor ----------------------------------------------------


class _Manager(BaseManager):
    pass


class _Submitted:
    """What a ProcessPoolExecutor worker holds for a task it submitted: a token to wait on."""

    def __init__(self, server: Any, token: int) -> None:
        self.server, self.token = server, token

    def result(self) -> Any:
        return self.server.result(self.token)


class _ProxyPool:
    """``submit`` for a ProcessPoolExecutor worker: the bench's server submits to the pool."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def submit(self, fn: Any, *args: Any) -> _Submitted:
        return _Submitted(self.server, self.server.submit(fn, *args))


class _Submissions:
    """Runs in the bench's process, one thread per connected worker."""

    def __init__(self) -> None:
        self.executor: concurrent.futures.Executor | None = None
        self.futures: dict[int, concurrent.futures.Future] = {}
        self.tokens = iter(range(1, 1 << 62))
        self.lock = threading.Lock()

    def submit(self, fn: Any, *args: Any) -> int:
        assert self.executor is not None
        with self.lock:
            token = next(self.tokens)
            self.futures[token] = self.executor.submit(fn, *args)
        return token

    def result(self, token: int) -> Any:
        with self.lock:
            future = self.futures.pop(token)
        return future.result()


def _connect(address: Any, authkey: bytes) -> None:
    """A ProcessPoolExecutor worker's initializer: reach the pool through the bench's server."""
    global _proxy
    _Manager.register("submissions")
    manager = _Manager(address=address, authkey=authkey)
    manager.connect()
    _proxy = _ProxyPool(manager.submissions())  # type: ignore[attr-defined]


def ppe_fib(n: int, cutoff: int, workers: int, timeout: float = DEADLOCK_TIMEOUT) -> dict[str, Any]:
    """Run the recursive ``fib`` on ProcessPoolExecutor(workers) for at most ``timeout``
    seconds; end its processes; say whether it finished and whether any process is left."""
    submissions = _Submissions()
    authkey = secrets.token_bytes(16)
    _Manager.register("submissions", callable=lambda: submissions)
    server = _Manager(address=("127.0.0.1", 0), authkey=authkey).get_server()
    threading.Thread(target=server.serve_forever, daemon=True, name="bench-ppe-submissions").start()
    spawn = multiprocessing.get_context("spawn")
    ppe = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=spawn, initializer=_connect, initargs=(server.address, authkey)
    )
    submissions.executor = ppe
    started = time.perf_counter()
    future = ppe.submit(fib, n, cutoff)
    try:
        value: Any = future.result(timeout)
        outcome = "finished"
    except concurrent.futures.TimeoutError:
        value, outcome = None, f"deadlocked: no result in {timeout:.0f} s"
    seconds = time.perf_counter() - started
    # Every worker waits on a child that no worker is free to run: shutdown would wait forever,
    # so the processes are ended (ProcessPoolExecutor has no public way before Python 3.14).
    processes = list(getattr(ppe, "_processes", {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)
    ppe.shutdown(wait=True, cancel_futures=True)
    server.stop_event.set()  # type: ignore[attr-defined]
    server.listener.close()  # type: ignore[attr-defined]
    return {
        "outcome": outcome,
        "value": value,
        "seconds": seconds,
        "processes_left": sum(p.is_alive() for p in processes),
    }


# -- the measurements ----------------------------------------------------------------------------


def measure(
    pool: Any,
    workers: int,
    submits: int,
    n: int,
    cutoff: int,
    repeat: int,
    deadlock_timeout: float = DEADLOCK_TIMEOUT,
) -> dict[str, Any]:
    """The nested rows: submit cost inside vs outside a task, and recursion vs serial."""
    warm_up(pool, workers, cutoff)
    inside, through, outside = [], [], []
    runs: dict[bool, list[Pair]] = {True: [], False: []}
    for _ in range(repeat):
        inside.append(pool.submit(submit_inside, submits).result())
        through.append(pool.submit(submit_inside, submits, False).result())
        outside.append(submit_outside(pool, submits))
        for _ in range(3):
            for keep in (True, False):
                runs[keep].append(pair(pool, n, cutoff, keep))
    status = pool.status()
    figures: dict[str, Any] = {
        "submits": submits,
        "inside_rate": submits / _median(inside),
        "through_rate": submits / _median(through),
        "outside_rate": submits / _median(outside),
        "fib": {"n": n, "cutoff": cutoff, "workers": workers, "children": children_of(n, cutoff)},
        "waiting_peak": status.get("waiting_peak", 0),
        "ppe": ppe_fib(n, cutoff, workers, deadlock_timeout),
    }
    for keep, name in ((True, "fib"), (False, "fib_through")):
        figures.update({f"{name}_{key}": value for key, value in summary(runs[keep]).items()})
    return figures


#: One recursion on the pool beside a serial one: (pool seconds, serial seconds, children that
#: went through the coordinator, STEAL requests sent).
Pair = tuple[float, float, int, int]


def warm_up(pool: Any, workers: int, cutoff: int) -> None:
    """Every worker loads the recursion and makes its tasks' client, both ways."""
    for _ in range(2 * workers):
        pool.submit(fib, cutoff + 3, cutoff).result()
        pool.submit(fib, cutoff + 3, cutoff, False).result()


def pair(pool: Any, n: int, cutoff: int, keep: bool) -> Pair:
    """``fib(n)`` on the pool, then serially here: each beside the other, in turn."""
    before = pool.status()
    started = time.perf_counter()
    value = pool.submit(fib, n, cutoff, keep).result()
    seconds = time.perf_counter() - started
    after = pool.status()
    started = time.perf_counter()
    expected = fib_serial(n)
    serial = time.perf_counter() - started
    assert value == expected  # (not in the timed call: it would time a serial run too)
    return seconds, serial, after["submitted"] - before["submitted"] - 1, after["steals"] - before["steals"]


def summary(pairs: list[Pair]) -> dict[str, Any]:
    """Medians of the pool and serial seconds, every pair's ratio (sorted), and the mean
    children through the coordinator and STEALs per run."""
    return {
        "pool_s": _median([p[0] for p in pairs]),
        "serial_s": _median([p[1] for p in pairs]),
        "ratios": sorted(p[1] / p[0] for p in pairs),  # each run beside its serial
        "via_coordinator": sum(p[2] for p in pairs) / len(pairs),
        "steals": sum(p[3] for p in pairs) / len(pairs),
    }


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


# -- python -m minipool.bench nested: the recursion alone, round after round ------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fib", default="27,18", help="n,cutoff of the recursion (default 27,18)")
    parser.add_argument("--workers", type=int, default=2, help="pool workers (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each a median (default 5)")
    parser.add_argument("--pairs", type=int, default=15, help="runs of each kind per round (default 15)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of pairs, kept and through the coordinator in turns; one row per round with the
    machine's load average, so that a quiet moment can be told from a busy one."""
    from ..pool import Pool

    n, cutoff = (int(x) for x in args.fib.split(","))
    rounds: list[dict[str, Any]] = []
    with Pool(args.workers) as pool:
        pool.wait_for_workers(args.workers)
        warm_up(pool, args.workers, cutoff)
        pids = _worker_pids(pool, args.workers)
        for number in range(1, args.rounds + 1):
            progress(f"round {number} of {args.rounds}")
            load = os.getloadavg()[0]
            runs: dict[bool, list[Pair]] = {True: [], False: []}
            kept_cpu = 0.0
            for _ in range(args.pairs):
                before = _cpu_seconds(pids)
                runs[True].append(pair(pool, n, cutoff, True))
                kept_cpu += _cpu_seconds(pids) - before
                runs[False].append(pair(pool, n, cutoff, False))
            kept = summary(runs[True]) | {"workers_cpu_s": kept_cpu / args.pairs if pids else None}
            rounds.append({"load": load, "kept": kept, "through": summary(runs[False])})
    rows = [
        [
            number,
            r["load"],
            r["kept"]["serial_s"],
            r["kept"]["pool_s"],
            "-" if r["kept"]["workers_cpu_s"] is None else r["kept"]["workers_cpu_s"],
            _median(r["kept"]["ratios"]),
            r["kept"]["steals"],
            r["kept"]["via_coordinator"],
            _median(r["through"]["ratios"]),
        ]
        for number, r in enumerate(rounds, 1)
    ]
    print_table(
        f"fib({n}) cutoff {cutoff} on Pool({args.workers}) beside the serial recursion "
        f"({children_of(n, cutoff)} children; ratios: medians of {args.pairs} pairs)",
        [
            "round",
            "load",
            "serial (s)",
            "kept (s)",
            "workers' CPU (s)",
            "kept ratio",
            "STEALs",
            "via coordinator",
            "through ratio",
        ],
        rows,
    )
    return {"fib": {"n": n, "cutoff": cutoff, "workers": args.workers}, "rounds": rounds}


def _pid() -> int:
    time.sleep(0.05)  # long enough that the other workers take the others
    return os.getpid()


def _worker_pids(pool: Any, workers: int) -> list[int]:
    """The pool's worker processes (none where /proc cannot tell their CPU time)."""
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        return []
    pids: set[int] = set()
    while len(pids) < workers:
        pids.update(f.result() for f in [pool.submit(_pid) for _ in range(2 * workers)])
    return sorted(pids)


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds the processes ``pids`` have used (in clock ticks)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rows(figures: dict[str, Any]) -> list[list[Any]]:
    """The dispatch table's rows for ``figures`` (see :func:`measure`)."""
    fib_label = f"fib({figures['fib']['n']}) cutoff {figures['fib']['cutoff']} (s)"
    ppe = figures["ppe"]
    med = _median
    children = figures["fib"]["children"]
    return [
        [
            "nested submit, kept (from a task)",
            figures["inside_rate"],
            "Pool.submit from the client",
            figures["outside_rate"],
            figures["inside_rate"] / figures["outside_rate"],
        ],
        [
            "nested submit, keep_children=False",
            figures["through_rate"],
            "Pool.submit from the client",
            figures["outside_rate"],
            figures["through_rate"] / figures["outside_rate"],
        ],
        [
            fib_label + ", kept + stolen",
            figures["fib_pool_s"],
            "the same recursion, serial (ratio: median of the pairs)",
            figures["fib_serial_s"],
            med(figures["fib_ratios"]),
        ],
        [
            f"  of {children} children: via the coordinator, STEALs",
            figures["fib_via_coordinator"],
            "STEAL requests sent",
            figures["fib_steals"],
            "-",
        ],
        [
            fib_label + ", keep_children=False",
            figures["fib_through_pool_s"],
            "the same recursion, serial (ratio: median of the pairs)",
            figures["fib_through_serial_s"],
            med(figures["fib_through_ratios"]),
        ],
        [
            fib_label,
            figures["fib_pool_s"],
            f"ProcessPoolExecutor: {ppe['outcome']}, {ppe['processes_left']} processes left",
            ppe["seconds"],
            "-",
        ],
    ]
