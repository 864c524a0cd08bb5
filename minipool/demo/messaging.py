"""The tour's message-log step: a consumer group member killed, its records redelivered.

Seed 004 builds stream processing on a message queue whose log makes retries possible. Here a
coordinator hosts a topic, two processes read it as one consumer group, and one of them is
SIGKILLed mid-stream: the records it held unacknowledged go to the other, so nothing is lost,
and the only duplicates are records the dead member had already been handed (at-least-once).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

from .step import COLUMNS, Context, Outcome

__all__ = ["topics"]

HEARTBEAT = 0.5  # the group notices a silent member within three of these

# One member of the group, in a process of its own: it prints each record's value as it
# processes it, slowly, so that it still holds records when it is killed.
MEMBER = textwrap.dedent(
    """
    import sys, time
    from minipool.topics import Consumer
    consumer = Consumer("tour-jobs", address=sys.argv[1], group="tour", max_records=20)
    for record in consumer:
        print(int(record.value), flush=True)
        time.sleep(0.01)
    """
)


def topics(ctx: Context) -> Outcome:
    from ..cluster.coordinator import Coordinator
    from ..topics import Consumer, Producer

    count = ctx.size(300, 2000)
    key = secrets.token_hex(16)
    env = {**os.environ, "MINIPOOL_AUTHKEY": key}
    with Coordinator(key.encode(), heartbeat=HEARTBEAT) as coordinator:
        url = coordinator.serve("tcp://127.0.0.1:0")
        coordinator.topics.admin(
            "tour", None, {"op": "create", "topic": "tour-jobs", "config": {"partitions": 2}}
        )
        victim = subprocess.Popen(
            [sys.executable, "-c", MEMBER, url], env=env, stdout=subprocess.PIPE, text=True
        )
        survivor = Consumer(
            "tour-jobs", address=url, authkey=key, group="tour", auto_offset_reset="earliest", max_records=20
        )
        try:
            deadline = time.monotonic() + 30
            while len(coordinator.topics.describe("tour-jobs")[0]["groups"][0]["members"]) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("the second member never joined the group")
                time.sleep(0.02)
            start = time.perf_counter()
            with Producer(url, authkey=key) as producer:
                for i in range(count):
                    producer.send("tour-jobs", b"%d" % i, key=b"k%d" % i)
            ctx.say(f"{count} records produced; two members share them")
            assert victim.stdout is not None
            by_victim = [int(victim.stdout.readline()) for _ in range(10)]  # it is mid-stream
            mine = [int(r.value) for r in survivor.poll(5)]
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed = time.perf_counter()
            ctx.say("one member SIGKILLed mid-stream")
            by_victim += [int(line) for line in victim.stdout.read().split()]
            redelivered_after = None
            while len(set(mine) | set(by_victim)) < count and time.perf_counter() - killed < 30:
                batch = [int(r.value) for r in survivor.poll(2)]
                if redelivered_after is None and set(batch) & set(by_victim):
                    redelivered_after = time.perf_counter() - killed
                mine += batch
            seconds = time.perf_counter() - start
            survivor.commit()
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait()
            survivor.close()
    lost = count - len(set(mine) | set(by_victim))
    twice = len(mine) + len(by_victim) - len(set(mine) | set(by_victim))
    rows: list[list[Any]] = [
        ["member SIGKILLed mid-stream", 1, len(by_victim), seconds, "", ""],
        ["the surviving member", 1, len(mine), seconds, twice, lost],
    ]
    return Outcome(
        COLUMNS + ["processed twice", "lost"],
        rows,
        f"{lost} of {count} records lost, {twice} processed twice"
        + (
            f", the dead member's records redelivered after {redelivered_after:.2f} s"
            if redelivered_after
            else ""
        ),
        "A log with a consumer group is at-least-once: records a member was handed but never "
        "acknowledged go to another member once it is gone -- at once when its connection closes, "
        f"as a killed process's does, within three heartbeats ({3 * HEARTBEAT:.1f} s here) when it "
        "only falls silent -- so a crash loses nothing; the price is that the records the dead "
        "member had processed but not acknowledged are processed again. A queue that forgets a "
        "record once it is handed out would have lost them with the process.",
        {"records produced": float(count), "processed at least once": float(count - lost)},
        "records",
        [f"{count} records, 2 partitions, heartbeat {HEARTBEAT} s; the survivor committed at the end"],
        peer="records produced",
    )
