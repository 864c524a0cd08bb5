"""Pipeline benchmark: what each stage kind and channel kind costs.

Cases (each figure is a median of ``--repeat`` runs, all in the same invocation):

* the annual-report pipeline (examples/annual_reports.py, seed 001's experiment) with thread,
  async and process stages, fast and durable channels, beside the serial baseline: reports/s,
  paragraphs/s, speed-up and peak RSS. Each configuration runs in a fresh child process, so its
  peak RSS (``ru_maxrss``) is its own (worker processes of a process stage are not included:
  they are children of the forkserver);
* CPU-bound and I/O-bound stages on each kind (thread, process, async): when each one wins;
* the per-record cost of one fast channel between two thread stages;
* durable channel throughput (records/s through a journal, group commit per chunk) by fsync policy;
* peak RSS growth of a long stream (default 10,000,000 records) through three stages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import positive, print_table, progress

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "annual_reports.py"

# Runs in a child process: one configuration, then a JSON line with seconds and memory.
_CHILD = r"""
import json, resource, runpy, sys, tempfile, time
from pathlib import Path

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

cfg = json.loads(sys.argv[1])
from minipool import pipeline as pl
out = {}
if cfg["case"] == "annual":
    ns = runpy.run_path(cfg["example"], run_name="annual_reports_bench")
    ns["MODEL"].update(ns["training_set"]())
    g = ns["build"].__globals__
    g["LATENCY"] = cfg["latency"]
    with tempfile.TemporaryDirectory() as tmp:
        g["WORKDIR"] = Path(tmp)
        companies = range(cfg["reports"])
        base = rss_kb()
        start = time.perf_counter()
        if cfg["kind"] == "serial":
            result = ns["serial"](companies)
        else:
            journal = str(Path(tmp) / "journal") if cfg["durable"] else None
            result = ns["build"](companies, cfg["kind"]).run(journal=journal)
        out["seconds"] = time.perf_counter() - start
        out["paragraphs"] = sum(v[0] for v in result.values())
else:  # a long stream through three stages
    base = rss_kb()
    p = (pl.source(range(cfg["records"])) | pl.map(lambda x: x + 1) | pl.filter(lambda x: x % 7)
         | pl.map(lambda x: x * 2) | pl.count())
    start = time.perf_counter()
    out["count"] = p.run()
    out["seconds"] = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out.update(base_mb=base / 1024, peak_mb=peak / 1024, growth_mb=(peak - base) / 1024)
print(json.dumps(out))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reports", type=int, default=100, help="annual reports per run (100)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per simulated fetch")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown")
    parser.add_argument(
        "--channel-records", type=int, default=1_000_000, help="records for the fast-channel cost (1,000,000)"
    )
    parser.add_argument(
        "--durable-records",
        type=int,
        default=200_000,
        help="records for durable channel throughput (200,000)",
    )
    parser.add_argument(
        "--kind-tasks",
        type=positive,
        default=100,
        help="waits of 20 ms in the stage-kinds case, and ten times as many 1 ms CPU tasks (100)",
    )
    parser.add_argument(
        "--stream-records",
        type=int,
        default=10_000_000,
        help="records for the long-stream memory case (10,000,000; 0 skips it)",
    )


def _child(cfg: dict[str, Any]) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, timeout=600, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def annual_reports(args: argparse.Namespace) -> list[dict[str, Any]]:
    configs = [
        ("serial", "-", False),
        ("thread", "fast", False),
        ("async", "fast", False),
        ("process", "fast", False),
        ("thread", "durable", True),
    ]
    results = []
    for kind, channel, durable in configs:
        progress(f"annual reports: {kind} / {channel} x{args.repeat}")
        runs = [
            _child(
                {
                    "case": "annual",
                    "example": str(EXAMPLE),
                    "reports": args.reports,
                    "latency": args.latency,
                    "kind": kind,
                    "durable": durable,
                }
            )
            for _ in range(args.repeat)
        ]
        seconds = _median_of(runs, "seconds")
        results.append(
            {
                "stages": kind,
                "channel": channel,
                "seconds": seconds,
                "reports_per_s": args.reports / seconds,
                "paragraphs_per_s": runs[0]["paragraphs"] / seconds,
                "peak_rss_mb": max(r["peak_mb"] for r in runs),
            }
        )
    serial = results[0]["seconds"]
    for r in results:
        r["speedup"] = serial / r["seconds"]
    return results


def _time_pipeline(build: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        build().run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def channel_cost(args: argparse.Namespace) -> dict[str, float]:
    from minipool import pipeline as pl

    n = args.channel_records
    progress(f"fast channel: {n:,} records through 1 and 2 thread stages x{args.repeat}")

    def ident(x: Any) -> Any:
        return x

    one = _time_pipeline(lambda: pl.source(range(n)) | pl.map(ident) | pl.count(), args.repeat)
    two = _time_pipeline(
        lambda: pl.source(range(n)) | pl.map(ident) | pl.map(ident) | pl.count(), args.repeat
    )
    return {
        "records": n,
        "one_stage_us": one / n * 1e6,
        "two_stages_us": two / n * 1e6,
        "channel_us": (two - one) / n * 1e6,
    }


def spin(n: int) -> int:
    """About a millisecond of pure-Python CPU work (holds the GIL throughout)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def wait(x: Any) -> Any:
    time.sleep(0.02)
    return x


async def await_(x: Any) -> Any:
    import asyncio

    await asyncio.sleep(0.02)
    return x


def stage_kinds(args: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU-bound and I/O-bound stages on each kind: when each one wins."""
    from minipool import pipeline as pl

    cpu = [20_000] * (10 * args.kind_tasks)
    io = list(range(args.kind_tasks))
    cpu_work, io_work = f"CPU 1 ms x {len(cpu)}", f"wait 20 ms x {len(io)}"
    cases = [
        (cpu_work, "thread, 1 worker", lambda: pl.source(cpu) | pl.map(spin)),
        (cpu_work, "thread, 2 workers", lambda: pl.source(cpu) | pl.map(spin, workers=2)),
        (
            cpu_work,
            "process, 2 workers",
            lambda: pl.source(cpu) | pl.map(spin, kind="process", workers=2),
        ),
        (io_work, "thread, 1 worker", lambda: pl.source(io) | pl.map(wait)),
        (io_work, "thread, 32 workers", lambda: pl.source(io) | pl.map(wait, workers=32)),
        (
            io_work,
            "async, 32 workers",
            lambda: pl.source(io) | pl.map(await_, kind="async", workers=32),
        ),
        (
            io_work,
            "process, 2 workers",
            lambda: pl.source(io) | pl.map(wait, kind="process", workers=2),
        ),
    ]
    rows = []
    for work, kind, build in cases:
        progress(f"stage kinds: {work} on {kind} x{args.repeat}")
        seconds = _time_pipeline(build, args.repeat)
        rows.append({"work": work, "stage": kind, "seconds": seconds})
    return rows


def durable_throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    from minipool import pipeline as pl

    n = args.durable_records
    rows = []
    for fsync in (None, "always", "everysec"):
        label = "fast (no journal)" if fsync is None else f"durable, fsync={fsync}"
        progress(f"durable channel: {n:,} records, {label} x{args.repeat}")
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                options = {} if fsync is None else {"journal": tmp, "fsync": fsync}
                p = pl.source(range(n)) | pl.map(abs) | pl.reduce(max)
                start = time.perf_counter()
                p.run(**options)
                times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rows.append({"channel": label, "records": n, "records_per_s": n / seconds})
    return rows


def long_stream(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.stream_records:
        return None
    progress(f"long stream: {args.stream_records:,} records through three stages (one run)")
    out = _child({"case": "stream", "records": args.stream_records})
    return {
        "records": args.stream_records,
        "seconds": out["seconds"],
        "records_per_s": args.stream_records / out["seconds"],
        "rss_before_mb": out["base_mb"],
        "peak_rss_mb": out["peak_mb"],
        "growth_mb": out["growth_mb"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    annual = annual_reports(args)
    kinds = stage_kinds(args)
    channel = channel_cost(args)
    durable = durable_throughput(args)
    stream = long_stream(args)

    print_table(
        f"Annual-report pipeline: {args.reports} reports, {args.latency * 1000:g} ms "
        f"simulated fetch latency, median of {args.repeat}",
        ["stages", "channel", "seconds", "reports/s", "paragraphs/s", "vs serial", "peak RSS MB"],
        [
            [
                r["stages"],
                r["channel"],
                r["seconds"],
                r["reports_per_s"],
                r["paragraphs_per_s"],
                f"{r['speedup']:.2f}x",
                r["peak_rss_mb"],
            ]
            for r in annual
        ],
    )
    print_table(
        f"Stage kinds (median of {args.repeat}; process figures include starting the pool)",
        ["work", "stage", "seconds"],
        [[r["work"], r["stage"], r["seconds"]] for r in kinds],
    )
    print_table(
        f"Fast channel between two thread stages ({channel['records']:,} records, median of {args.repeat})",
        ["pipeline", "µs per record"],
        [
            ["source | map | count", channel["one_stage_us"]],
            ["source | map | map | count", channel["two_stages_us"]],
            ["one more channel + thread stage", channel["channel_us"]],
        ],
    )
    print_table(
        f"Durable channel ({args.durable_records:,} records into a journaled reduce, "
        f"median of {args.repeat})",
        ["channel", "records/s"],
        [[r["channel"], r["records_per_s"]] for r in durable],
    )
    if stream:
        print_table(
            "Long stream through three stages (source | map | filter | map | count)",
            ["records", "seconds", "records/s", "RSS before MB", "peak RSS MB", "growth MB"],
            [
                [
                    stream["records"],
                    stream["seconds"],
                    stream["records_per_s"],
                    stream["rss_before_mb"],
                    stream["peak_rss_mb"],
                    stream["growth_mb"],
                ]
            ],
        )
    return {
        "annual_reports": annual,
        "stage_kinds": kinds,
        "fast_channel": channel,
        "durable_channel": durable,
        "long_stream": stream,
    }
