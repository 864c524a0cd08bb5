"""Topics: minipool's message log beside Redis Streams, in the same run.

Technique: *measure against the peer a user would otherwise pick*. Redis Streams is the closest
thing to minipool's topics: a log in a server, consumer groups with ``XREADGROUP``/``XACK`` and
pending entries. The bench starts ``redis-server`` on 127.0.0.1 on a free port (and stops it),
and a minipool coordinator as a process of its own, and measures:

* **throughput**: 1 KB records produced (``XADD`` pipelined; ``Producer.send``) while one group
  member consumes and acknowledges them (``XREADGROUP`` + ``XACK``; ``Consumer`` in a group),
  records/s from the first send to the last delivery; ``queue.Queue`` between two threads is
  the floor (no server at all);
* **durability's cost**: minipool with ``--journal --fsync everysec`` (segment files) beside
  the in-memory log;
* **latency**: produce-to-delivery p50/p99 of records sent at a fixed rate;
* **a large topic**: ``--large`` records of 100 bytes into a journaled coordinator, its RSS
  before and after, and a consumer reading it from offset 0 with its rate per tenth (a steady
  rate means a read costs the same at any offset).

Each throughput figure is the median of ``--repeat`` runs, implementations taking turns.
Without ``redis-server`` (or the ``redis`` package) the Redis rows say how to install them
and the rest is measured.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from .common import print_table, progress

_KEY = os.urandom(16).hex()
INSTALL = "apt-get install redis-server (the server) and pip install redis (its Python client)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=20_000, help="1 KB records per throughput run")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per implementation")
    parser.add_argument("--rate", type=int, default=1000, help="records/s of the latency run")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the latency run")
    parser.add_argument(
        "--large", type=int, default=1_000_000, help="records of 100 bytes in the large-topic run (0: skip)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server process (a coordinator or redis-server) on a free port, stopped on exit."""

    def __init__(self, args: list[str], ready: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if ready in line:
                break
        else:
            raise RuntimeError(f"{args[0]} did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def coordinator(journal: str | None = None) -> tuple[Server, str]:
    url = f"tcp://127.0.0.1:{_free_port()}"
    args = [sys.executable, "-m", "minipool", "coordinator", "--bind", url]
    if journal is not None:
        args += ["--journal", journal, "--fsync", "everysec"]
    return Server(args, "listening on", {**os.environ, "MINIPOOL_AUTHKEY": _KEY}), url


def redis_server() -> tuple[Server, Any] | str:
    """A redis-server and a client of it, or why there is none."""
    binary = shutil.which("redis-server")
    try:
        import redis  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return f"no redis package: {INSTALL}"
    if binary is None:
        return f"no redis-server: {INSTALL}"
    port = _free_port()
    server = Server(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        "Ready to accept connections",
    )
    return server, redis.Redis(host="127.0.0.1", port=port)


# -- throughput: produce while a group member consumes -----------------------------------------


def minipool_run(url: str, records: int, value: bytes, topic: str) -> float:
    from ..topics import Consumer, Producer

    consumer = Consumer(
        topic, address=url, authkey=_KEY, group="bench", auto_offset_reset="earliest", max_records=1000
    )
    start = time.perf_counter()

    def produce() -> None:
        with Producer(url, authkey=_KEY) as producer:
            for _ in range(records):
                producer.send(topic, value)

    thread = threading.Thread(target=produce)
    thread.start()
    got = 0
    while got < records:
        got += len(consumer.poll(10))
    elapsed = time.perf_counter() - start
    thread.join()
    consumer.close()
    return records / elapsed


def redis_run(client: Any, records: int, value: bytes, topic: str) -> float:
    client.xgroup_create(topic, "bench", id="0", mkstream=True)
    start = time.perf_counter()

    def produce() -> None:
        pipe = client.pipeline(transaction=False)
        for i in range(records):
            pipe.xadd(topic, {b"v": value})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()

    thread = threading.Thread(target=produce)
    thread.start()
    got = 0
    while got < records:
        reply = client.xreadgroup("bench", "c1", {topic: ">"}, count=1000, block=1000)
        for _, entries in reply:
            client.xack(topic, "bench", *[entry_id for entry_id, _ in entries])
            got += len(entries)
    elapsed = time.perf_counter() - start
    thread.join()
    client.delete(topic)
    return records / elapsed


def queue_run(records: int, value: bytes) -> float:
    q: queue.Queue[bytes] = queue.Queue(maxsize=10_000)
    start = time.perf_counter()

    def produce() -> None:
        for _ in range(records):
            q.put(value)

    thread = threading.Thread(target=produce)
    thread.start()
    for _ in range(records):
        q.get()
    elapsed = time.perf_counter() - start
    thread.join()
    return records / elapsed


# -- latency at a fixed rate --------------------------------------------------------------------


def _paced(rate: int, seconds: float, send: Any) -> None:
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(str(time.perf_counter()).encode().ljust(100))


def minipool_latency(url: str, rate: int, seconds: float) -> list[float]:
    from ..topics import Consumer, Producer

    consumer = Consumer("latency", address=url, authkey=_KEY, group="lat", auto_offset_reset="latest")
    producer = Producer(url, authkey=_KEY)
    total = int(rate * seconds)
    thread = threading.Thread(target=_paced, args=(rate, seconds, lambda v: producer.send("latency", v)))
    thread.start()
    delays: list[float] = []
    while len(delays) < total:
        for record in consumer.poll(10):
            delays.append(time.perf_counter() - float(record.value))
    thread.join()
    producer.close()
    consumer.close()
    return delays


def redis_latency(client: Any, rate: int, seconds: float) -> list[float]:
    client.xgroup_create("latency", "lat", id="$", mkstream=True)
    total = int(rate * seconds)
    thread = threading.Thread(
        target=_paced, args=(rate, seconds, lambda v: client.xadd("latency", {b"v": v}))
    )
    reader = client.__class__(connection_pool=client.connection_pool)
    thread.start()
    delays: list[float] = []
    while len(delays) < total:
        for _, entries in reader.xreadgroup("lat", "c1", {"latency": ">"}, count=1000, block=1000):
            now = time.perf_counter()
            delays += [now - float(fields[b"v"]) for _, fields in entries]
            reader.xack("latency", "lat", *[entry_id for entry_id, _ in entries])
    thread.join()
    client.delete("latency")
    return delays


def _percentiles(delays: list[float]) -> tuple[float, float]:
    ordered = sorted(delays)
    return ordered[len(ordered) // 2] * 1e3, ordered[int(len(ordered) * 0.99)] * 1e3


# -- a large topic ------------------------------------------------------------------------------


def large_topic(records: int) -> dict[str, Any]:
    from ..topics import Consumer, Producer

    with tempfile.TemporaryDirectory(prefix="minipool-topics-") as journal:
        server, url = coordinator(journal)
        try:
            time.sleep(0.5)
            before = server.rss_mb()
            value = b"r" * 100
            start = time.perf_counter()
            with Producer(url, authkey=_KEY) as producer:
                for _ in range(records):
                    producer.send("large", value)
            produce_rate = records / (time.perf_counter() - start)
            after = server.rss_mb()
            consumer = Consumer(
                "large", address=url, authkey=_KEY, auto_offset_reset="earliest", max_records=5000
            )
            tenth = max(1, records // 10)
            rates: list[float] = []
            got, mark = 0, time.perf_counter()
            while got < records:
                batch = consumer.poll(10)
                got += len(batch)
                if got >= tenth * (len(rates) + 1) or got >= records:
                    now = time.perf_counter()
                    rates.append(tenth / (now - mark))
                    mark = now
            consumer.close()
            end = server.rss_mb()
        finally:
            server.close()
    return {
        "records": records,
        "rss_before_mb": round(before, 1),
        "rss_after_produce_mb": round(after, 1),
        "rss_after_consume_mb": round(end, 1),
        "produce_per_s": round(produce_rate),
        "consume_per_s_by_tenth": [round(r) for r in rates],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    value = os.urandom(1024)
    results: dict[str, Any] = {"records": args.records, "value_bytes": len(value)}
    redis = redis_server()
    if isinstance(redis, str):
        print(f"Redis Streams not measured: {redis}", file=sys.stderr)
        results["redis"] = redis
    memory, memory_url = coordinator()
    with tempfile.TemporaryDirectory(prefix="minipool-topics-") as journal:
        durable, durable_url = coordinator(journal)
        rates: dict[str, list[float]] = {"minipool": [], "minipool fsync=everysec": [], "queue.Queue": []}
        if not isinstance(redis, str):
            rates["Redis Streams"] = []
        try:
            for round_ in range(args.repeat):
                progress(f"throughput round {round_ + 1}/{args.repeat}")
                rates["minipool"].append(minipool_run(memory_url, args.records, value, f"t{round_}"))
                rates["minipool fsync=everysec"].append(
                    minipool_run(durable_url, args.records, value, f"t{round_}")
                )
                if not isinstance(redis, str):
                    rates["Redis Streams"].append(redis_run(redis[1], args.records, value, f"t{round_}"))
                rates["queue.Queue"].append(queue_run(args.records, value))
            progress("latency")
            latency = {"minipool": _percentiles(minipool_latency(memory_url, args.rate, args.seconds))}
            if not isinstance(redis, str):
                latency["Redis Streams"] = _percentiles(redis_latency(redis[1], args.rate, args.seconds))
        finally:
            durable.close()
            memory.close()
            if not isinstance(redis, str):
                redis[0].close()
    medians = {name: statistics.median(r) for name, r in rates.items()}
    rows = [[name, f"{rate:,.0f}"] for name, rate in medians.items()]
    if "Redis Streams" in medians:
        rows.append(["minipool / Redis Streams", f"{medians['minipool'] / medians['Redis Streams']:.2f}x"])
    rows.append(
        ["fsync=everysec / in memory", f"{medians['minipool fsync=everysec'] / medians['minipool']:.2f}x"]
    )
    print_table(
        f"produce + consume {args.records:,} records of 1 KB through a group (records/s)", ["", "rate"], rows
    )
    print_table(
        f"produce-to-delivery latency at {args.rate} records/s for {args.seconds}s (ms)",
        ["", "p50", "p99"],
        [[name, f"{p50:.2f}", f"{p99:.2f}"] for name, (p50, p99) in latency.items()],
    )
    results["throughput"] = {name: round(rate) for name, rate in medians.items()}
    results["latency_ms"] = {name: [round(p50, 3), round(p99, 3)] for name, (p50, p99) in latency.items()}
    if args.large:
        progress(f"a topic of {args.large:,} records of 100 bytes")
        large = large_topic(args.large)
        print_table(
            f"a topic of {args.large:,} records of 100 bytes, journaled",
            ["", "value"],
            [
                [
                    "coordinator RSS before / after produce / after consume (MB)",
                    " / ".join(
                        str(large[k])
                        for k in ("rss_before_mb", "rss_after_produce_mb", "rss_after_consume_mb")
                    ),
                ],
                ["produce (records/s)", f"{large['produce_per_s']:,}"],
                [
                    "consume from offset 0, per tenth (records/s)",
                    " ".join(f"{r:,}" for r in large["consume_per_s_by_tenth"]),
                ],
            ],
        )
        results["large"] = large
    return results
