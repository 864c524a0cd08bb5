"""Balancing policies with one slowed worker among fast ones: simulated, then for real.

Four workers with 2 slots each; one runs 5x slower. A client maps a batch of uneven tasks
(log-normal sizes) keeping at most ``--window`` unfinished, and workers may hold ``--prefetch``
leases per slot, as Celery's prefetch multiplier allows. Each policy runs the same task sets;
the table shows the median makespan and its ratio to round-robin (median and worst over the
task sets), then the same comparison for other prefetch depths. Simulated seconds, so the
figures are exact and repeatable on any machine.

The last table runs the same experiment on a real coordinator: four worker connections with
two thread slots each, one started with ``--slowdown 5``, the tasks sleeping for their size in
units of ``--unit`` seconds, and ``Pool.map_unordered`` keeping the window. Wall-clock seconds,
medians over ``--real-sets`` task sets (``--real-sets 0`` skips it).
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

from ..cluster.balance import POLICIES, get_policy
from ..cluster.simulate import WorkerSpec, simulate
from .common import print_table, progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=200, help="tasks per batch (default 200)")
    parser.add_argument("--sets", type=int, default=9, help="task sets to take the median of")
    parser.add_argument("--slowdown", type=float, default=5.0, help="how much slower one worker is")
    parser.add_argument("--prefetch", type=int, default=4, help="leases per slot (default 4)")
    parser.add_argument("--window", type=int, default=16, help="most unfinished tasks per client")
    parser.add_argument(
        "--real-sets", type=int, default=3, help="task sets run on a real coordinator and workers (0 to skip)"
    )
    parser.add_argument("--unit", type=float, default=0.004, help="seconds per unit of task size")


def sleep_for(seconds: float) -> None:
    """A task whose cost is time, not CPU: many of them share two cores without distortion."""
    import time

    time.sleep(seconds)


def real(
    policy: str, sizes: list[float], *, slowdown: float, prefetch: int, window: int, unit: float
) -> float:
    """Makespan, in seconds, of ``sizes`` on a real coordinator with one slowed worker."""
    import secrets
    import threading
    import time

    from ..cluster.coordinator import Coordinator
    from ..cluster.worker import Worker
    from ..pool import Pool

    key = secrets.token_hex(16).encode()
    with Coordinator(key, balance=policy, prefetch=prefetch * 2 - 2) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        workers = [
            Worker(url, key, kind="thread", slots=2, reconnect=False, name=f"fast{i}") for i in range(3)
        ]
        workers.append(
            Worker(url, key, kind="thread", slots=2, reconnect=False, name="slow", slowdown=slowdown)
        )
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        for t in threads:
            t.start()
        with Pool(address=url, authkey=key) as pool:
            pool.wait_for_workers(4)
            start = time.perf_counter()
            for _ in pool.map_unordered(sleep_for, [x * unit for x in sizes], buffersize=window):
                pass
            elapsed = time.perf_counter() - start
        for w in workers:
            w.stop()
        for t in threads:
            t.join(5)
    return elapsed


def _workers(slowdown: float) -> list[WorkerSpec]:
    return [WorkerSpec(f"fast{i}", slots=2) for i in range(3)] + [
        WorkerSpec("slow", slots=2, speed=1.0 / slowdown)
    ]


def compare(
    *, tasks: int = 200, sets: int = 9, slowdown: float = 5.0, prefetch: int = 4, window: int | None = 16
) -> dict[str, dict[str, float]]:
    """Median makespan of each policy and its speed-up over round-robin, across task sets."""
    workers = _workers(slowdown)
    makespans: dict[str, list[float]] = {name: [] for name in POLICIES}
    for seed in range(sets):
        rng = random.Random(seed)
        sizes = [rng.lognormvariate(0, 0.8) for _ in range(tasks)]
        for name in POLICIES:
            policy = get_policy(name, rng=random.Random(seed))
            result = simulate(policy, workers, sizes, prefetch=prefetch, window=window)
            makespans[name].append(result.makespan)
    baseline = makespans["round-robin"]
    summary = {}
    for name, values in makespans.items():
        ratios = [b / v for b, v in zip(baseline, values, strict=True)]
        summary[name] = {
            "makespan": statistics.median(values),
            "speedup_median": statistics.median(ratios),
            "speedup_worst": min(ratios),
        }
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    common = dict(tasks=args.tasks, sets=args.sets, slowdown=args.slowdown, window=args.window)
    progress(f"simulating {args.sets} sets of {args.tasks} tasks per policy")
    main = compare(prefetch=args.prefetch, **common)
    print_table(
        f"Makespan (simulated s) of {args.tasks} uneven tasks, 4 workers x 2 slots, one "
        f"{args.slowdown:g}x slower, prefetch {args.prefetch}, window {args.window}",
        ["policy", "median makespan", "vs round-robin (median)", "vs round-robin (worst)"],
        [
            [name, r["makespan"], f"{r['speedup_median']:.2f}x", f"{r['speedup_worst']:.2f}x"]
            for name, r in main.items()
        ],
    )
    sweep = {}
    for prefetch in (1, 2, 4):
        progress(f"prefetch {prefetch}")
        sweep[prefetch] = compare(prefetch=prefetch, **common)
    print_table(
        "Speed-up over round-robin (median of the sets) by prefetch depth",
        ["prefetch"] + list(POLICIES),
        [[p] + [f"{r[name]['speedup_median']:.2f}x" for name in POLICIES] for p, r in sweep.items()],
    )
    measured: dict[str, dict[str, float]] = {}
    if args.real_sets:
        times: dict[str, list[float]] = {name: [] for name in POLICIES}
        for seed in range(args.real_sets):
            rng = random.Random(seed)
            sizes = [rng.lognormvariate(0, 0.8) for _ in range(args.tasks)]
            for name in POLICIES:
                progress(f"real coordinator: {name}, task set {seed + 1}/{args.real_sets}")
                times[name].append(
                    real(
                        name,
                        sizes,
                        slowdown=args.slowdown,
                        prefetch=args.prefetch,
                        window=args.window,
                        unit=args.unit,
                    )
                )
        base = times["round-robin"]
        for name, values in times.items():
            speedups = [b / v for b, v in zip(base, values, strict=True)]
            measured[name] = {
                "makespan": statistics.median(values),
                "speedup_median": statistics.median(speedups),
            }
        print_table(
            f"Real coordinator and workers: wall-clock makespan (s), {args.tasks} tasks of"
            f" {args.unit * 1000:g} ms per unit, median of {args.real_sets} sets",
            ["policy", "median makespan (s)", "vs round-robin (median)"],
            [[name, r["makespan"], f"{r['speedup_median']:.2f}x"] for name, r in measured.items()],
        )
    return {
        "workers": [vars(w) for w in _workers(args.slowdown)],
        "parameters": vars(args),
        "policies": main,
        "by_prefetch": sweep,
        "real": measured,
    }
