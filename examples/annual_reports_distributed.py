"""Seed 001's experiment, distributed: the annual-report job as three pipe sets, each in
processes of its own, joined by exchange channels on one coordinator.

The pipe sets of the paper's figure 4: ``fetch`` (fetch + save, threads overlapping the
simulated network), ``split`` (a report into paragraphs), ``classify`` (the naive-Bayes model,
``--classifiers N`` instance processes); the statistics are the caller's: it tallies the
``classified`` channel through the outflow and checks the result against the serial run of
``annual_reports.py``, the same functions one after another.

    python examples/annual_reports_distributed.py                 # an embedded coordinator
    python examples/annual_reports_distributed.py --classifiers 2
    python examples/annual_reports_distributed.py --connect tcp://host:7878   # MINIPOOL_AUTHKEY

Every instance also appears in ``python -m minipool status URL`` while it runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import annual_reports as reports

from minipool import pipeline as pl
from minipool.pipesets import PipeSet, outflow, serve
from minipool.topics import Producer

# Instance processes import this module afresh: the run's settings reach them in the environment.
reports.LATENCY = float(os.environ.get("ANNUAL_REPORTS_LATENCY", reports.LATENCY))
reports.WORKDIR = Path(os.environ.get("ANNUAL_REPORTS_DIR", reports.WORKDIR))


def classify(item: list[Any]) -> tuple[int, str, float]:
    if not reports.MODEL:  # trained once per classify process (the training set is seeded)
        reports.MODEL.update(reports.training_set())
    return reports.classify((item[0], item[1]))


FETCH = PipeSet(
    "fetch",
    source="companies",
    fragment=pl.map(reports.fetch, workers=16) | pl.map(reports.save),
    output="saved",
)
SPLIT = PipeSet("split", source="saved", fragment=pl.flat_map(reports.split), output="paragraphs")
CLASSIFY = PipeSet("classify", source="paragraphs", fragment=pl.map(classify), output="classified")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--latency", type=float, default=reports.LATENCY, help="seconds per fetch")
    parser.add_argument("--classifiers", type=int, default=1, help="classify instance processes")
    parser.add_argument("--connect", metavar="URL", help="a running coordinator (else an embedded one)")
    args = parser.parse_args(argv)
    key = os.environ.setdefault("MINIPOOL_AUTHKEY", secrets.token_hex(16))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ANNUAL_REPORTS_DIR"] = tmp
        reports.WORKDIR = Path(tmp)
        os.environ["ANNUAL_REPORTS_LATENCY"] = str(args.latency)
        reports.LATENCY = args.latency
        reports.MODEL.update(reports.training_set())
        companies = range(args.reports)
        start = time.perf_counter()
        expected = reports.serial(companies)
        serial_s = time.perf_counter() - start
        paragraphs = sum(v[0] for v in expected.values())

        centre = None
        url = args.connect
        if url is None:
            from minipool.cluster.coordinator import Coordinator

            centre = Coordinator(key.encode())
            url = centre.serve("tcp://127.0.0.1:0")
        sets = [serve(FETCH, url), serve(SPLIT, url), serve(CLASSIFY, url, instances=args.classifiers)]
        try:
            with Producer(url) as producer:
                wanted = {"fetch": 1, "split": 1, "classify": args.classifiers}
                while any(len(producer.client.lookup(name)) < n for name, n in wanted.items()):
                    time.sleep(0.05)  # the instances are starting and registering
                start = time.perf_counter()
                for company in companies:
                    producer.send("companies", str(company))
            stats: dict = {}
            results = outflow("classified", address=url, group=f"statistics-{os.getpid()}", timeout=60)
            for _, row in zip(range(paragraphs), results, strict=False):
                reports.tally(stats, tuple(row))
            results.close()
            distributed_s = time.perf_counter() - start
        finally:
            for served in sets:
                served.stop()
            if centre is not None:
                centre.close()
    if stats != expected:
        print("distributed and serial results differ!", file=sys.stderr)
        return 1
    print(f"{args.reports} reports, {paragraphs} paragraphs: identical statistics to the serial run")
    print(f"serial baseline           : {serial_s:6.2f} s  ({args.reports / serial_s:7.1f} reports/s)")
    print(
        f"pipe sets ({args.classifiers} classifier(s)) : {distributed_s:6.2f} s"
        f"  ({args.reports / distributed_s:7.1f} reports/s)  -> {serial_s / distributed_s:.1f}x the serial"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
