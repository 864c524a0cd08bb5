"""Tour steps on the cluster's decisions: load balancing around a slowed worker, and
autoscaling through a burst (seed 000 §2.1's compute pool, seed 001's dynamic balancing).

Balancing runs each policy on a real coordinator with three workers and one five times
slower, in turns; autoscaling records how many workers the pool has, moment by moment,
while a burst arrives and drains, beside a fixed pool running the same burst.
"""

from __future__ import annotations

import functools
import random
import threading
import time

from ..bench.balance import real, sleep_for
from ..cluster.balance import POLICIES
from .step import COLUMNS, Context, Outcome, alternate

__all__ = ["balancing", "autoscaling"]


def balancing(ctx: Context) -> Outcome:
    count = ctx.size(48, 200)
    unit = ctx.size(15, 20) / 1000
    rng = random.Random(7)
    sizes = [rng.lognormvariate(0, 0.8) for _ in range(count)]
    slowdown = 5.0
    seconds, _ = alternate(
        {
            name: functools.partial(real, name, sizes, slowdown=slowdown, prefetch=4, window=16, unit=unit)
            for name in POLICIES
        },
        rounds=2,
    )
    base = seconds["round-robin"]
    rows = [[name, 4, count, s, base / s] for name, s in seconds.items()]
    best = min(seconds, key=lambda k: seconds[k])
    ideal = sum(sizes) * unit / (3 * 2 + 2 / slowdown)  # every slot busy to the end
    return Outcome(
        COLUMNS + ["vs round-robin"],
        rows,
        f"{best} finishes {base / seconds[best]:.2f}x sooner than round-robin",
        f"One of four workers runs {slowdown:.0f}x slower. The coordinator hands a task only to a "
        "worker with a free slot, so no policy can pile work on the slow one; what a blind policy "
        "(round-robin, random) still does is give it its turn at long tasks, and the run waits for "
        "them at the end. "
        + (
            f"Watching the workers pays: {best} finished {base / seconds[best]:.2f}x sooner "
            f"than round-robin ({seconds[best]:.2f} s against an ideal {ideal:.2f} s with every slot "
            "busy to the end)."
            if base / seconds[best] >= 1.15
            else f"Here the best, {best}, finished within {base / seconds[best]:.2f}x of round-robin "
            f"(ideal {ideal:.2f} s): the free-slot rule already kept the slow worker's share small, "
            "so the policies' differences are within this run's noise."
        ),
        {name: s for name, s in seconds.items()},
        "makespan, seconds (lower is better)",
        [
            f"{count} tasks of 1-{max(sizes) * unit * 1e3:.0f} ms (lognormal), "
            f"3 workers + 1 slowed {slowdown:.0f}x, 2 slots each"
        ],
        peer="round-robin",
    )


def autoscaling(ctx: Context) -> Outcome:
    from ..pool import Pool

    burst = ctx.size(24, 60)
    # Even at 50 ms, the quick burst holds one worker for over a second: far past scale_up_after.
    duration = ctx.size(50, 100) / 1000
    high = ctx.workers * 2
    fixed = ctx.pool()
    fixed_s, _ = alternate({"fixed": lambda: list(fixed.map(sleep_for, [duration] * burst))}, 1)
    timeline: list[tuple[float, int]] = []
    with Pool(
        min_workers=1,
        max_workers=high,
        autoscale={"scale_up_after": 0.1, "idle_timeout": 0.6, "cooldown": 0.1},
    ) as pool:
        pool.wait_for_workers(1)
        start = time.monotonic()
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                timeline.append((time.monotonic() - start, len(pool.status()["workers"])))
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        list(pool.map(sleep_for, [duration] * burst))
        elastic_s = time.monotonic() - start
        deadline = time.monotonic() + 10
        while len(pool.status()["workers"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.15)
        stop.set()
        sampler.join(5)
        events = pool.status()["autoscale"]["events"]
    peak = max(n for _, n in timeline)
    end = timeline[-1][1]
    actions = [str(e["action"]) for e in events]
    rows = [
        [f"fixed Pool({ctx.workers})", ctx.workers, burst, fixed_s["fixed"], ctx.workers],
        [f"Pool(min_workers=1, max_workers={high})", peak, burst, elastic_s, end],
    ]
    shrunk = "shrank back to 1" if end == 1 else f"still had {end} workers 10 s later"
    return Outcome(
        COLUMNS + ["workers at the end"],
        rows,
        f"grew 1 -> {peak} workers for the burst, then {shrunk}",
        f"A burst of {burst} tasks of {duration * 1e3:.0f} ms waited in the queue, so the autoscaler "
        + (
            f"added workers up to {peak} (of at most {high}) and, once they sat idle, retired them: it "
            if peak > 1
            else "should have added workers, but the pool never grew past 1 (the burst drained before "
            "scale_up_after passed); it "
        )
        + f"{shrunk}. It finished in {elastic_s:.2f} s against {fixed_s['fixed']:.2f} s on a fixed pool "
        f"of {ctx.workers}, paying for start-ups while it grew and holding no idle processes after.",
        {f"t={t:.1f}s": float(n) for t, n in timeline[:: max(1, len(timeline) // 24)]},
        "workers in the pool over time",
        [
            f"autoscaler events: {actions.count('add')} adding workers, "
            f"{actions.count('remove')} retiring them",
            "timeline (s, workers): " + ", ".join(f"{t:.1f}:{n}" for t, n in timeline),
        ],
    )
