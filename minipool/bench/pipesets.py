"""Pipe sets: seed 001's experiment re-run -- exchange channels vs fast pipes vs one process.

Technique: *measure what the paper measured, beside the peer in the same run*. The paper's job
splits annual reports into paragraphs and classifies each one; it reports QPS, memory, CPU and
a "loss rate" (application-level resends over sends) against another framework. Here:

* a coordinator process (the global pipe centre) and two pipe sets, each its own process(es):
  ``split`` (a report -> its paragraphs, on channel ``paragraphs``) and ``classify`` (a
  paragraph -> a label, CPU work of ``--work`` microseconds, on channel ``labels``);
* the ``paragraphs`` channel durable (a topic, one transactional step per batch) or a fast
  pipe (pushed instance to instance, nothing kept), with 1 or 2 classify instances;
* the same job as an in-process pipeline (``pl.source | pl.flat_map | pl.map``), the floor.

Reported per configuration: paragraphs/s from the first report sent to the last label (the
paper's QPS), wall microseconds per paragraph, the resend rate (redelivered records + refused
steps + fast-pipe re-pushes, over records sent to a channel), and each process's peak RSS and
CPU seconds (from ``/proc``). Each figure is the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from .. import pipeline as pl
from ..pipesets import PipeSet, to_channel
from .common import print_table, progress
from .topics import Server

KEY = "bench-pipesets-key-0123456789abcdef"
WORK = float(os.environ.get("MINIPOOL_BENCH_WORK_US", "200")) / 1e6  # instance processes read it


def split(report: str) -> list[str]:
    return [p for p in report.split("\n") if p]


def classify(paragraph: str) -> str:
    until = time.perf_counter() + WORK  # the classifier's CPU cost, as a busy loop
    while time.perf_counter() < until:
        pass
    return "finance" if "revenue" in paragraph else "other"


SPLIT = PipeSet("split", source="reports", fragment=pl.flat_map(split), output="paragraphs")
CLASSIFY = PipeSet("classify", source="paragraphs", fragment=pl.map(classify) | to_channel("labels"))
SPLIT_FAST = PipeSet(
    "split", source="reports", fragment=pl.flat_map(split), output="paragraphs", fast=("paragraphs",)
)
CLASSIFY_FAST = PipeSet(
    "classify", source="paragraphs", fragment=pl.map(classify) | to_channel("labels"), fast=("paragraphs",)
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reports", type=int, default=400, help="reports per run")
    parser.add_argument("--paragraphs", type=int, default=20, help="paragraphs per report")
    parser.add_argument("--work", type=float, default=200.0, help="classifier CPU microseconds a paragraph")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")


def reports(count: int, paragraphs: int) -> list[str]:
    return [
        "\n".join(
            f"report {r} paragraph {p} {'revenue' if p % 3 == 0 else 'staff'}" for p in range(paragraphs)
        )
        for r in range(count)
    ]


def _proc(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a live process."""
    peak = float("nan")
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return peak, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def distributed(
    docs: list[str], total: int, fast: bool, classifiers: int, work: float, kill: bool = False
) -> dict[str, Any]:
    """One run; with ``kill``, the last classify instance is SIGKILLed a third of the way in."""
    from ..topics import Consumer, Producer
    from ..topics.connection import request
    from ..wire import Kind

    env = {**os.environ, "MINIPOOL_AUTHKEY": KEY, "MINIPOOL_BENCH_WORK_US": str(work)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    centre = Server([sys.executable, "-m", "minipool", "coordinator", "--bind", url], "listening on", env)
    suffix = "_FAST" if fast else ""
    command = [sys.executable, "-m", "minipool", "pipe-set"]
    sets = [
        subprocess.Popen([*command, f"minipool.bench.pipesets:SPLIT{suffix}", "--connect", url], env=env)
    ] + [
        subprocess.Popen([*command, f"minipool.bench.pipesets:CLASSIFY{suffix}", "--connect", url], env=env)
        for _ in range(classifiers)
    ]
    labels = Consumer("labels", address=url, authkey=KEY, group="bench", auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + 30
        while len([e for e in labels.client.lookup("classify")]) < classifiers or not labels.client.lookup(
            "split"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the pipe sets did not register")
            time.sleep(0.05)
        started = time.perf_counter()
        with Producer(url, authkey=KEY) as producer:
            for doc in docs:
                producer.send("reports", json.dumps(doc))  # the pipe sets' codec is JSON
        got, killed_at, recovered = 0, None, None
        while got < total:
            batch = labels.poll(30)
            if not batch:
                raise RuntimeError(f"only {got} of {total} labels arrived")
            got += len(batch)
            if kill and killed_at is None and got >= total // 3:
                sets[-1].kill()
                killed_at = time.perf_counter()
            if killed_at is not None and recovered is None:
                recovered = taken_over(labels.client, classifiers - 1, killed_at)
        elapsed = time.perf_counter() - started
        if killed_at is not None:
            got = labels_made(labels.client)  # the exact count: a record made twice shows here
            while recovered is None and time.perf_counter() - killed_at < 10:
                recovered = taken_over(labels.client, classifiers - 1, killed_at)
        entries = [
            e["meta"] for e in labels.client.status()["registry"] if e["meta"].get("kind") == "pipe-set"
        ]
        resent = sum(m.get("refused", 0) + m.get("fast_resent", 0) for m in entries)
        for topic, group in (("reports", "split"), ("paragraphs", "classify")):
            headers = {"op": "describe", "topic": topic, "group": group}
            if not fast or topic == "reports":
                resent += request(labels.client, Kind.TOPIC_ADMIN, headers, 10.0)[0]["groups"][0][
                    "redelivered"
                ]
        usage = [_proc(p.pid) for p in sets] + [_proc(centre.proc.pid)]
    finally:
        labels.close()
        for p in sets:
            p.terminate()
        for p in sets:
            p.wait(15)  # a killed one has been waited for already
        centre.close()
    return {
        "rate": total / elapsed,
        "labels": got,  # exactly once: a lost record would stop the run, a duplicate show here
        "recovered_s": recovered,
        "resent": resent,
        "sent": 2 * total,  # paragraphs and labels
        "rss": [round(u[0], 1) for u in usage],
        "cpu": [round(u[1], 2) for u in usage],
    }


def taken_over(client: Any, members: int, killed_at: float) -> float | None:
    """Seconds from the kill until the centre had handed the dead instance's partitions (and
    the records it held) to the others; None if not yet."""
    from ..topics.connection import request
    from ..wire import Kind

    headers = {"op": "describe", "topic": "paragraphs", "group": "classify"}
    group = request(client, Kind.TOPIC_ADMIN, headers, 10.0)[0]["groups"][0]
    return time.perf_counter() - killed_at if len(group["members"]) == members else None


def labels_made(client: Any, timeout: float = 30.0) -> int:
    """Every label the classify instances will ever make, once each is settled.

    A classify step appends its labels and acknowledges its paragraphs as one transaction, so
    once the group has acknowledged every paragraph (lag 0) no step is left to run, or to run
    again: the labels channel's length is then final, duplicates included.
    """
    from ..topics.connection import request
    from ..wire import Kind

    def describe(topic: str, group: str | None) -> dict[str, Any]:
        headers = {"op": "describe", "topic": topic, "group": group}
        report: dict[str, Any] = request(client, Kind.TOPIC_ADMIN, headers, 10.0)[0]
        return report

    deadline = time.monotonic() + timeout
    while describe("paragraphs", "classify")["groups"][0]["lag"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"classify left paragraphs unacknowledged for {timeout:.0f} s")
        time.sleep(0.02)
    return sum(p["end"] for p in describe("labels", None)["partitions"])


def in_process(docs: list[str], total: int) -> float:
    started = time.perf_counter()
    out = (pl.source(docs) | pl.flat_map(split) | pl.map(classify)).run()
    assert len(out) == total
    return total / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    global WORK
    WORK = args.work / 1e6
    docs = reports(args.reports, args.paragraphs)
    total = args.reports * args.paragraphs
    configs = [
        ("exchange channel", False, 1),
        ("exchange channel", False, 2),
        ("fast pipe", True, 1),
        ("fast pipe", True, 2),
    ]
    runs: dict[str, list[dict[str, Any]]] = {f"{n}, {c} classify": [] for n, _, c in configs}
    floor: list[float] = []
    killed: list[dict[str, Any]] = []
    for round_ in range(args.repeat):
        for name, fast, classifiers in configs:
            progress(f"round {round_ + 1}/{args.repeat}: {name}, {classifiers} classify")
            runs[f"{name}, {classifiers} classify"].append(
                distributed(docs, total, fast, classifiers, args.work)
            )
        progress(f"round {round_ + 1}/{args.repeat}: exchange channel, 2 classify, one killed")
        killed.append(distributed(docs, total, False, 2, args.work, kill=True))
        floor.append(in_process(docs, total))
    rows = []
    results: dict[str, Any] = {"paragraphs": total, "work_us": args.work, "configurations": {}}
    for label, measured in runs.items():
        rate = statistics.median(m["rate"] for m in measured)
        resend = sum(m["resent"] for m in measured) / sum(m["sent"] for m in measured)
        last = measured[-1]
        rows.append(
            [
                label,
                f"{rate:,.0f}",
                f"{1e6 / rate:,.0f}",
                f"{resend:.4f}",
                " / ".join(map(str, last["rss"])),
                " / ".join(map(str, last["cpu"])),
            ]
        )
        results["configurations"][label] = {"rate": rate, "resend_rate": resend, "runs": measured}
    rate = statistics.median(m["rate"] for m in killed)
    resend = sum(m["resent"] for m in killed) / sum(m["sent"] for m in killed)
    recovery = statistics.median(m["recovered_s"] or float("nan") for m in killed)
    rows.append(
        [
            f"exchange channel, 2 classify, one SIGKILLed: taken over in {recovery * 1e3:.0f} ms,"
            f" {sum(m['labels'] - total for m in killed)} made twice"
        ]
        + [f"{rate:,.0f}", f"{1e6 / rate:,.0f}", f"{resend:.4f}", "-", "-"]
    )
    results["killed"] = {"rate": rate, "resend_rate": resend, "recovered_s": recovery, "runs": killed}
    rate = statistics.median(floor)
    rows.append(
        ["one process (pl.source | flat_map | map)", f"{rate:,.0f}", f"{1e6 / rate:,.0f}", "-", "-", "-"]
    )
    results["in_process"] = rate
    print_table(
        f"{total} paragraphs, classify {args.work:.0f} us each (median of {args.repeat})",
        [
            "configuration",
            "paragraphs/s",
            "us/paragraph",
            "resend rate",
            "peak RSS MB (split/classify.../centre)",
            "CPU s (same order)",
        ],
        rows,
    )
    return results
