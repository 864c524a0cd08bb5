"""The tour's pipe-set step: seed 001's pipe sets as processes, one SIGKILLed mid-run.

A pipe set is a pipeline fragment served by instance processes that share an exchange channel
(a topic on the coordinator, the paper's global pipe centre). Each instance pulls a batch, runs
the fragment, and hands the centre its outputs and the acknowledgement of its inputs as one
step; so when one instance is killed, the other takes over its records and nothing is lost or
produced twice downstream. The step counts it.
"""

from __future__ import annotations

import collections
import json
import secrets
import time
from typing import Any

from .. import pipeline as pl
from ..pipesets import PipeSet
from .step import COLUMNS, Context, Outcome

__all__ = ["pipesets", "SQUARES", "square"]


def square(n: int) -> dict[str, int]:
    return {"n": n, "square": n * n}


#: The pipe set the step serves (instance processes import it as minipool.demo.exchange:SQUARES).
SQUARES = PipeSet("tour-squares", source="tour-numbers", fragment=pl.map(square), output="tour-squared")


def pipesets(ctx: Context) -> Outcome:
    from ..cluster.coordinator import Coordinator
    from ..pipesets import serve
    from ..topics import Consumer, Producer

    total = ctx.size(600, 3000)
    key = secrets.token_hex(16)
    with Coordinator(key.encode(), heartbeat=0.5) as coordinator:
        url = coordinator.serve("tcp://127.0.0.1:0")
        served = serve(SQUARES, url, instances=2, authkey=key, max_records=25)
        try:
            _wait(lambda: _members(coordinator) == 2, "two instances joined the pipe set")
            start = time.perf_counter()
            with Producer(url, authkey=key) as producer:
                for i in range(total):
                    producer.send("tour-numbers", str(i))
            _wait(lambda: _progress(coordinator) > 0, "the instances started")
            served.kill(0)
            ctx.say("one instance of the pipe set SIGKILLed mid-run")
            values: list[int] = []
            with Consumer(
                "tour-squared", address=url, authkey=key, group="tour", auto_offset_reset="earliest"
            ) as reader:
                deadline = time.monotonic() + 60
                while len(values) < total and time.monotonic() < deadline:
                    values += [json.loads(r.value)["n"] for r in reader.poll(1.0)]
            seconds = time.perf_counter() - start
        finally:
            served.stop()
    counts = collections.Counter(values)
    lost = total - len(counts)
    twice = sum(1 for c in counts.values() if c > 1)
    rows: list[list[Any]] = [["2 instances, one SIGKILLed", 2, total, seconds, len(values), twice, lost]]
    return Outcome(
        COLUMNS + ["outputs", "made twice", "lost"],
        rows,
        f"{lost} of {total} records lost, {twice} made twice, with an instance SIGKILLed mid-run",
        "Each instance hands the centre a batch's outputs and the acknowledgement of its inputs as "
        "one step, so a killed instance's unfinished batch is simply pulled again by the other: "
        "nothing is lost and nothing reaches the next channel twice. (Fast pipes, which skip the "
        "centre, lose what a killed reader held: docs/pipesets.md.)",
        {"records produced": float(total), "outputs, each once": float(len(counts) - twice)},
        "records",
        [f"{total} numbers through the pipe set tour-squares, 2 instances, batches of 25"],
        peer="records produced",
    )


def _members(coordinator: Any) -> int:
    try:
        return len(coordinator.topics.describe("tour-numbers", "tour-squares")[0]["groups"][0]["members"])
    except Exception:  # noqa: BLE001 -- not there yet
        return 0


def _progress(coordinator: Any) -> int:
    try:
        return sum(p["end"] for p in coordinator.topics.describe("tour-squared")[0]["partitions"])
    except Exception:  # noqa: BLE001 -- not there yet
        return 0


def _wait(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting until {what}")
        time.sleep(0.02)
