"""Kill a streaming pipeline with SIGKILL, start it again, and get exactly the same output.

The pipeline reads the topic ``logs`` as consumer group ``stats``, counts each user's
requests in 5-second event-time windows (allowed lateness 2 s) and writes one record per
window result to the topic ``counts``, with a journal (``run(journal=DIR)``). This script:

1. hosts the topics on a coordinator (``Pool()``'s own) and produces the log records;
2. runs the pipeline once, uninterrupted, into ``counts-reference`` (a group of its own);
3. starts it again into ``counts``, and SIGKILLs it half-way (no cleanup of any kind runs);
4. starts it a third time with the same journal and group: it prints what it recovered (how
   many records the journal had done, its position in the topic, whose state it restored, and,
   when the kill cut a write short, the window results it wrote again) and carries on;
5. compares ``counts`` with ``counts-reference`` record by record.

    python examples/topic_kill_and_resume.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from minipool import Pool
from minipool import pipeline as pl
from minipool.topics import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]


def log_records(n: int, seed: int = 4) -> list[dict[str, Any]]:
    """``n`` requests, 100 per second of event time, a few of them late by up to 3 s."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = i / 100 - (rng.random() * 3 if rng.random() < 0.02 else 0)
        out.append(
            {"ts": round(ts, 2), "user": f"u{rng.randrange(6)}", "status": rng.choice([200, 200, 404])}
        )
    return out


def slowly(record: Any) -> dict[str, Any]:
    time.sleep(0.0003)  # stands for real work, and gives the kill time to land mid-stream
    event: dict[str, Any] = json.loads(record.value)
    return event


def window_result(pair: tuple[str, pl.Window]) -> dict[str, Any]:
    user, window = pair
    return {"user": user, "start": window.start, "update": window.update, "requests": len(window.records)}


def pipeline(address: str, group: str, out: str) -> pl.Pipeline:
    return (
        pl.from_topic("logs", group=group, address=address, idle_timeout=1.0)
        | pl.map(slowly)
        | pl.window(seconds=5, key=lambda e: e["user"], timestamp=lambda e: e["ts"], lateness=2)
        | pl.map(window_result)
        | pl.to_topic(out, address=address, key=lambda r: r["user"])
    )


def run_pipeline(address: str, group: str, out: str, journal: str) -> None:
    """The child process: one run of the pipeline, printing what the journal gave back."""
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="  recovered: %(message)s")
    logging.getLogger("minipool").setLevel(logging.WARNING)
    logging.getLogger("minipool.pipeline").setLevel(logging.INFO)
    written = pipeline(address, group, out).run(journal=journal)
    print(f"  the run ended: {written} window results in '{out}' in all", flush=True)


def child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, __file__, "--child", *args], env=env, text=True, start_new_session=True
    )


def read_all(pool: Pool, topic: str) -> dict[int, list[bytes]]:
    """Every record of ``topic`` by partition (the order a topic keeps), read without a group."""
    out: dict[int, list[bytes]] = {}
    with Consumer(topic, pool=pool, auto_offset_reset="earliest") as consumer:
        while batch := consumer.poll(timeout=0.5):
            for record in batch:
                out.setdefault(record.partition, []).append(record.value)
    return out


def end_offset(pool: Pool, topic: str) -> int:
    """How many records ``topic`` holds, all partitions together."""
    with Consumer(topic, pool=pool, auto_offset_reset="latest") as consumer:
        return sum(consumer.positions())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=6000)
    parser.add_argument("--child", nargs=4, metavar=("ADDRESS", "GROUP", "OUT", "JOURNAL"))
    args = parser.parse_args(argv)
    if args.child:
        run_pipeline(*args.child)
        return 0

    os.environ["MINIPOOL_AUTHKEY"] = secrets.token_hex(16)  # the children connect with it
    records = log_records(args.records)
    with (
        Pool(1, kind="thread", authkey=os.environ["MINIPOOL_AUTHKEY"]) as pool,
        tempfile.TemporaryDirectory() as tmp,
    ):
        address = pool.address
        with Producer(pool=pool) as producer:
            for r in records:
                producer.send("logs", json.dumps(r).encode(), key=r["user"].encode())
            producer.flush()
        print(f"{len(records):,} log records in topic 'logs'")

        print("1. an uninterrupted run into 'counts-reference':")
        if child(address, "reference", "counts-reference", str(Path(tmp) / "reference")).wait(120) != 0:
            return 1

        print("2. the same pipeline into 'counts', SIGKILLed half-way:")
        journal = str(Path(tmp) / "journal")
        victim = child(address, "stats", "counts", journal)
        deadline = time.monotonic() + 60
        total = end_offset(pool, "counts-reference")
        target = total // 2
        while time.monotonic() < deadline and victim.poll() is None and end_offset(pool, "counts") < target:
            time.sleep(0.02)
        if victim.poll() is not None:
            print("the pipeline ended before it could be killed", file=sys.stderr)
            return 1
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        print(f"  killed with {end_offset(pool, 'counts')} of {total} window results written")

        print("3. started again with the same journal and group:")
        if child(address, "stats", "counts", journal).wait(120) != 0:
            return 1

        reference, counts = read_all(pool, "counts-reference"), read_all(pool, "counts")
    same = reference == counts
    total = sum(map(len, counts.values()))
    print(f"\n'counts' has {total} records, 'counts-reference' {sum(map(len, reference.values()))}: "
          f"{'identical, record by record' if same else 'DIFFERENT'}")  # fmt: skip
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
