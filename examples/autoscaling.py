"""Automatic expansion (seed 000 §2.1): a burst of work, the pool growing and shrinking.

``Pool(min_workers=1, max_workers=4, autoscale={...})`` starts one worker process and lets the
autoscaler (minipool/cluster/autoscale.py, driven by cluster/elastic.py) add processes while
tasks wait longer than ``scale_up_after`` with no free slot, and retire those idle for longer
than ``idle_timeout``, with a ``cooldown`` between two actions so it does not flap.

The script submits a burst of sleeping tasks, samples ``pool.status()`` every 0.1 s while they
run and afterwards while the pool is idle, and prints the timeline (workers, queued, done) and
the autoscaler's own log of what it did and why. It checks that every result is right, that the
pool grew past one worker during the burst and that it was back to one at the end.

    python examples/autoscaling.py [--tasks 40] [--seconds 0.1] [--max-workers 4]
"""

from __future__ import annotations

import argparse
import sys
import time

from minipool import Pool


def work(n: int, seconds: float) -> int:
    time.sleep(seconds)  # stands for I/O or computation: the point is that it takes a while
    return n * n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=0.1, help="each task's duration")
    parser.add_argument("--max-workers", type=int, default=4)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    args = parser.parse_args()
    timings = {"scale_up_after": 0.2, "idle_timeout": args.idle_timeout, "cooldown": 0.3}

    timeline: list[tuple[float, int, int, int]] = []
    with Pool(min_workers=1, max_workers=args.max_workers, autoscale=timings) as pool:
        pool.wait_for_workers(1)
        start = time.monotonic()
        futures = [pool.submit(work, n, args.seconds) for n in range(args.tasks)]

        def sample() -> dict:
            status = pool.status()
            timeline.append(
                (time.monotonic() - start, len(status["workers"]), status["queued"], status["done"])
            )
            return status

        while not all(f.done() for f in futures):
            sample()
            time.sleep(0.1)
        burst_seconds = time.monotonic() - start
        deadline = time.monotonic() + 4 * args.idle_timeout + 10  # time enough to shrink back
        while len(sample()["workers"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        results = [f.result() for f in futures]
        events = pool.status()["autoscale"]["events"]

    print(f"{args.tasks} tasks of {args.seconds} s, min 1 / max {args.max_workers} workers, {timings}")
    print(f"{'t (s)':>6} {'workers':>7} {'queued':>6} {'done':>5}")
    shapes = [(w, q == 0, d == args.tasks) for _, w, q, d in timeline]
    for i, (t, workers, queued, done) in enumerate(timeline):
        if i == 0 or shapes[i] != shapes[i - 1]:  # one row per change of shape
            print(f"{t:6.1f} {workers:7} {queued:6} {done:5}  {'#' * workers}")
    workers = timeline[-1][1]
    print("the autoscaler's log:")
    for event in events:
        print(f"  {event['time'] - events[0]['time']:5.1f} s  {event['action']:<6} {event['reason']}")

    peak = max(w for _, w, _, _ in timeline)
    serial_seconds = args.tasks * args.seconds
    print(
        f"burst done in {burst_seconds:.1f} s (one worker alone: {serial_seconds:.1f} s); "
        f"peak {peak} workers, {workers} at the end"
    )
    ok = results == [n * n for n in range(args.tasks)] and peak > 1 and workers == 1
    print(f"grew for the burst and shrank back, every result right: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
