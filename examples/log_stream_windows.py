"""Seed 004's log consumer: rolling counts, time windows and a top-3 MapReduce on a log stream.

Seed 004 reads web-server logs from a message queue and computes, as the stream flows, rolling
aggregates (errors in the last N seconds), per-window statistics, and the top-3 pages with a
MapReduce. Here an endless generator stands in for the Kafka topic (``take`` cuts it), and the
log lines carry their own timestamps, so the windows use *event time* and the output is the
same on every run. Traffic changes as it does on a real site: every 45 seconds another page is
trending, and every two minutes a 10-second outage turns three requests in ten into errors, so
each window's row shows what happened in it.

    python examples/log_stream_windows.py              # 60,000 log lines
    python examples/log_stream_windows.py --lines 200000
"""

from __future__ import annotations

import argparse
import itertools
import operator
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple

from minipool import pipeline as pl

PAGES = ["/", "/login", "/search", "/cart", "/checkout", "/product/1", "/product/2", "/help"]
WEIGHTS = [30, 10, 20, 8, 4, 15, 12, 1]


class Hit(NamedTuple):
    ts: float
    user: str
    status: int
    page: str


TRENDING = ["/product/2", "/search", "/cart", "/product/1", "/checkout", "/login"]


def log_lines(seed: int = 4) -> Iterator[str]:
    """An endless stream of log lines, about 100 per second of event time, errors in bursts."""
    rng = random.Random(seed)
    for n in itertools.count():
        ts = n / 100
        burst = 30 <= ts % 120 < 40  # a 10-second outage every two minutes
        status = 500 if rng.random() < (0.3 if burst else 0.01) else 200
        trending = TRENDING[int(ts // 45) % len(TRENDING)]  # another page is popular every 45 s
        page = trending if rng.random() < 0.35 else rng.choices(PAGES, WEIGHTS)[0]
        yield f"{ts:.2f} u{rng.randrange(500)} {status} {page}"


def parse(line: str) -> Hit:
    ts, user, status, page = line.split()
    return Hit(float(ts), user, int(status), page)


def top3_pages(window: pl.Window) -> tuple[float, int, int, list[tuple[str, int]]]:
    counts = Counter(hit.page for hit in window.records)
    errors = sum(1 for hit in window.records if hit.status >= 500)
    return window.start, len(window.records), errors, counts.most_common(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=60_000)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    hits = pl.source(log_lines) | pl.take(args.lines) | pl.map(parse)

    # 1. rolling aggregation: errors in the last 10 s, an alert when they pass 50
    alerts = (
        hits
        | pl.filter(lambda h: h.status >= 500)
        | pl.rolling(len, seconds=10, timestamp=operator.attrgetter("ts"))
        | pl.filter(lambda n: n == 50)
    ).run()  # the moments the count reaches 50
    print(f"rolling 10 s error count reached 50 {len(alerts)} times (once per outage)")

    # 2. tumbling 30-second windows (event time) with the top 3 pages of each window
    print("\nwindow start   hits  errors  top 3 pages")
    for start_s, n, errors, top in (
        hits | pl.window(seconds=30, timestamp=operator.attrgetter("ts")) | pl.map(top3_pages)
    ).stream():
        print(f"{start_s:10.0f} s {n:6}  {errors:6}  " + ", ".join(f"{p} ({c})" for p, c in top))

    # 3. MapReduce top 3 over the whole stream: map to (page, 1), shard by page, reduce, top
    top3 = (
        hits
        | pl.map(lambda h: (h.page, 1))
        | pl.shard(2, key=operator.itemgetter(0), then=pl.reduce_by_key(operator.add))
        | pl.top(3, key=operator.itemgetter(1))
    ).run()
    print("\nMapReduce top 3 pages:", ", ".join(f"{p} ({c})" for p, c in top3))

    # 4. the same answer, checked without the pipeline
    expected = Counter(parse(line).page for line in itertools.islice(log_lines(), args.lines))
    if top3 != expected.most_common(3):
        print("MapReduce result differs from a plain Counter!", file=sys.stderr)
        return 1
    print(f"\n{args.lines:,} log lines, three passes, {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
