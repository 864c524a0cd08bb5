"""Seed 004's MapReduce top 3, over a topic, keyed by *user* as the seed meant.

Seed 004 wants "the three users with the most page views" from lines ``name views``. Its Java
mapper writes ``context.write(new LongWritable(count), one)``: the key is the *view count*,
not the user (``words[0]``, the name, is thrown away). The reducer then counts the lines of
each view count, sorts by the count and prints the three largest counts, each labelled
"Total Count", with the number of lines that had it as "Unique Visits": no user appears, a
user with several lines is never summed, and users with equal counts become one row. Keyed
by user, the map emits ``(user, views)``, the reduce sums each user's views, and the top 3 of
those sums is the answer.

Here the lines arrive as records of a topic hosted by a coordinator (``Pool()``'s own), keyed
by user so each user's records keep their order in one partition. Two consumer groups read
the same topic, each getting every record: one runs the MapReduce keyed by user, the other
the seed's keyed by count, and both answers are printed beside a plain ``Counter``'s.

    python examples/topic_top3_users.py
    python examples/topic_top3_users.py --lines 50000
"""

from __future__ import annotations

import argparse
import operator
import random
import sys
from collections import Counter

from minipool import Pool
from minipool import pipeline as pl
from minipool.topics import Producer

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]


def visit_lines(n: int, seed: int = 4) -> list[str]:
    """``name views`` lines (one per session), a few users much busier than the rest."""
    rng = random.Random(seed)
    weights = [1 + 3 * (i < 3) + i % 2 for i in range(len(USERS))]
    return [f"{rng.choices(USERS, weights)[0]} {rng.randint(1, 20)}" for _ in range(n)]


def parse(record: object) -> tuple[str, int]:
    name, views = record.value.decode().split()  # type: ignore[attr-defined]
    return name, int(views)


def top3_by_user(pool: Pool) -> list[tuple[str, int]]:
    """map: (user, views); shuffle + reduce: sum per user, on two shards; then the top 3."""
    result: list[tuple[str, int]] = (
        pl.from_topic("visits", group="top3-by-user", pool=pool, idle_timeout=1.0)
        | pl.map(parse)
        | pl.shard(2, key=operator.itemgetter(0), then=pl.reduce_by_key(operator.add))
        | pl.top(3, key=operator.itemgetter(1))
    ).run()
    return result


def top3_as_the_seed_wrote_it(pool: Pool) -> list[tuple[int, int]]:
    """The seed's Java: map emits (views, 1), so the reduce groups by view count."""
    result: list[tuple[int, int]] = (
        pl.from_topic("visits", group="top3-by-count", pool=pool, idle_timeout=1.0)
        | pl.map(lambda r: (parse(r)[1], 1))
        | pl.reduce_by_key(operator.add)
        | pl.top(3, key=operator.itemgetter(0))  # the Java sorts by the key, the count, descending
    ).run()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args(argv)
    lines = visit_lines(args.lines)
    with Pool(1, kind="thread") as pool:  # its coordinator hosts the topic
        with Producer(pool=pool) as producer:
            for line in lines:
                producer.send("visits", line.encode(), key=line.split()[0].encode())
            producer.flush()
        print(f"{len(lines):,} 'name views' lines produced to topic 'visits'")

        by_user = top3_by_user(pool)
        print("\ntop 3 users by page views (keyed by user):")
        for i, (name, views) in enumerate(by_user, 1):
            print(f"  User #{i}: {name}, {views} views")

        by_count = top3_as_the_seed_wrote_it(pool)
        print("\nthe seed's Java, keyed by the view count instead:")
        for i, (count, lines_with_it) in enumerate(by_count, 1):
            print(f"  User #{i}: Total Count={count}, Unique Visits={lines_with_it}")
        print("  (no user names: the three largest view counts of any line, and how many lines had each)")

    totals: Counter[str] = Counter()
    for line in lines:
        name, views = line.split()
        totals[name] += int(views)
    expected = totals.most_common(3)
    if by_user != expected:
        print(f"\nMapReduce over the topic differs from a plain Counter: {expected}", file=sys.stderr)
        return 1
    print("\nthe MapReduce over the topic matches a plain Counter of the same lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
