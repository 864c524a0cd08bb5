"""A live dashboard: rolling per-page counts over a topic, reprinted as records arrive.

Seed 004's rolling aggregation ("a near-real-time view from periodic snapshots"): a web
server produces one record per page hit to the topic ``hits`` as they happen; the pipeline
reads it as consumer group ``dashboard``, keeps for every page the number of hits in the last
``--seconds`` of event time (``pl.rolling``), and redraws a one-line dashboard four times a
second (``pl.micro_batch(seconds=0.25)``, Spark Streaming's batch interval) with the latest
figure of every page. The producer runs in a thread beside it, so the dashboard moves while
records arrive. At the end the last line is checked against a direct count of the hits.

    python examples/topic_rolling_dashboard.py
    python examples/topic_rolling_dashboard.py --hits 5000 --rate 2000 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from typing import Any

from minipool import Pool
from minipool import pipeline as pl
from minipool.topics import Producer

PAGES = ["/", "/search", "/cart", "/login", "/help"]
WEIGHTS = [40, 25, 15, 15, 5]


def hits(n: int, rate: float, seed: int = 4) -> list[dict[str, Any]]:
    """``n`` hits at ``rate`` per second of event time, pages by popularity."""
    rng = random.Random(seed)
    return [{"ts": i / rate, "page": rng.choices(PAGES, WEIGHTS)[0]} for i in range(n)]


def produce(pool: Pool, events: list[dict[str, Any]], rate: float) -> None:
    """Send the hits in real time: about ``rate`` per second, in small bursts."""
    with Producer(pool=pool) as producer:
        start = time.monotonic()
        for i, event in enumerate(events):
            producer.send("hits", json.dumps(event).encode(), key=event["page"].encode())
            if i % 50 == 49:
                producer.flush()
                time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        producer.flush()


class Dashboard:
    """The latest rolling count of every page, one printed line per micro-batch."""

    def __init__(self) -> None:
        self.latest: dict[str, int] = {}
        self.lines = 0

    def redraw(self, batch: list[tuple[str, int]]) -> None:
        self.latest.update(batch)  # a batch holds (page, count) in arrival order: last wins
        self.lines += 1
        cells = "  ".join(f"{page} {self.latest.get(page, 0):>4}" for page in PAGES)
        print(f"[{self.lines:>3}] {cells}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0, help="hits per second")
    parser.add_argument("--seconds", type=float, default=1.0, help="the rolling window")
    args = parser.parse_args(argv)
    events = hits(args.hits, args.rate)
    dashboard = Dashboard()
    with Pool(1, kind="thread") as pool:  # its coordinator hosts the topic
        producer = threading.Thread(target=produce, args=(pool, events, args.rate))
        producer.start()
        print(f"hits in the last {args.seconds:g} s of event time, per page:")
        batches = (
            pl.from_topic("hits", group="dashboard", pool=pool, idle_timeout=2.0)
            | pl.map(lambda r: json.loads(r.value))
            | pl.rolling(len, seconds=args.seconds, key=lambda h: h["page"], timestamp=lambda h: h["ts"])
            | pl.micro_batch(seconds=0.25)
            | pl.sink(dashboard.redraw)
        ).run()
        producer.join()

    end = events[-1]["ts"]
    expected = {}  # each page's count in the window ending at its own last hit
    for page in PAGES:
        times = [e["ts"] for e in events if e["page"] == page]
        if times:
            expected[page] = sum(1 for t in times if t > times[-1] - args.seconds)
    print(f"\n{args.hits:,} hits over {end:.1f} s of event time, {batches} redraws")
    if dashboard.latest != expected:
        print(f"the last line differs from a direct count: {expected}", file=sys.stderr)
        return 1
    print("the last line matches a direct count of each page's hits in its last window")
    return 0


if __name__ == "__main__":
    sys.exit(main())
