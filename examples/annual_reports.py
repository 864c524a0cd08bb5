"""Seed 001's experiment in miniature: fetch annual reports, save, split, classify, count.

The seed's authors crawled listed companies' annual reports, stored them, split them into
paragraphs, picked out the financial-analysis paragraphs with a naive-Bayes classifier and
computed statistics -- a job that is I/O-bound first (fetching), CPU-bound second
(classifying). This script does the same on a synthetic corpus it generates, with simulated
network latency for "fetch", real files for "save", and a naive-Bayes classifier written here
in twenty lines. It runs the job twice: serially (one report after another), and as a minipool
pipeline where many fetches wait at once (threads or coroutines) and classification runs on
other processes, and prints both figures side by side.

With ``--distributed`` the second run is the paper's own layout (its figure 4): three pipe sets,
each in processes of its own, joined by exchange channels on one coordinator -- ``fetch``
(fetch + save, threads overlapping the simulated network), ``split`` (a report into
paragraphs) and ``classify`` (the naive-Bayes model, ``--instances N`` processes); the
statistics are the caller's, tallied from the ``classified`` channel through the outflow. Every
instance appears in ``python -m minipool status URL`` while it runs.

    python examples/annual_reports.py                  # threads fetch, classify in a thread
    python examples/annual_reports.py --kind async     # coroutines fetch
    python examples/annual_reports.py --kind process   # two processes classify
    python examples/annual_reports.py --journal /tmp/j # durable channel: a rerun resumes
                                                       # after the reports already done
    python examples/annual_reports.py --distributed --instances 2   # pipe sets, 2 classifiers
    python examples/annual_reports.py --distributed --connect tcp://host:7878  # MINIPOOL_AUTHKEY
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from minipool import pipeline as pl
from minipool.pipesets import PipeSet, outflow, serve
from minipool.topics import Producer

FINANCE = (
    "revenue profit assets liabilities cash equity margin dividend earnings debt income "
    "expenses capital turnover liquidity receivables depreciation amortization ebitda "
    "solvency interest tax"
).split()
OTHER = (
    "employees community environment governance strategy board innovation customers "
    "culture safety training diversity sustainability brand research partners mission "
    "values products talent outlook risks"
).split()
COMMON = (
    "the and of in to our year company we was for with as this that by on were have "
    "group its from which has at also"
).split()
WORD = re.compile(r"[a-z]+")
AMOUNT = re.compile(r"(\d+(?:\.\d+)?) million")


# -- the synthetic corpus ------------------------------------------------------------------


def make_paragraph(rng: random.Random, financial: bool) -> str:
    topic = FINANCE if financial else OTHER
    words = [
        rng.choice(topic) if rng.random() < 0.3 else rng.choice(COMMON) for _ in range(rng.randint(60, 120))
    ]
    if financial:
        words.insert(rng.randrange(len(words)), f"{rng.randint(1, 999)}.{rng.randint(0, 9)} million")
    return " ".join(words)


def make_report(company: int) -> str:
    rng = random.Random(company)
    return "\n\n".join(make_paragraph(rng, rng.random() < 0.4) for _ in range(30))


# -- a naive-Bayes classifier: plain dicts, so it travels to worker processes ---------------


def train_naive_bayes(docs: list[str], labels: list[str]) -> dict:
    """Multinomial naive Bayes with Laplace smoothing: log P(label) + sum log P(word | label)."""
    counts = {label: Counter() for label in set(labels)}
    for doc, label in zip(docs, labels, strict=True):
        counts[label].update(WORD.findall(doc))
    vocab = set().union(*counts.values())
    model = {"prior": {}, "loglik": {}, "unknown": {}}
    for label, c in counts.items():
        total = sum(c.values()) + len(vocab)
        model["prior"][label] = math.log(labels.count(label) / len(labels))
        model["loglik"][label] = {w: math.log((c[w] + 1) / total) for w in vocab}
        model["unknown"][label] = math.log(1 / total)
    return model


def predict(model: dict, text: str) -> str:
    words = WORD.findall(text)

    def score(label: str) -> float:
        loglik, unknown = model["loglik"][label], model["unknown"][label]
        return model["prior"][label] + sum(loglik.get(w, unknown) for w in words)

    return max(model["prior"], key=score)


def training_set() -> dict:
    rng = random.Random(2021)
    labels = ["finance" if i % 2 else "other" for i in range(400)]
    return train_naive_bayes([make_paragraph(rng, lab == "finance") for lab in labels], labels)


MODEL: dict = {}  # trained in main(), or by the first classify of a process that imports this
# Pipe set instance processes import this file afresh: the run's settings reach them in the environment.
LATENCY = float(os.environ.get("ANNUAL_REPORTS_LATENCY", 0.02))  # seconds one fetch waits on the "network"
WORKDIR = Path(os.environ.get("ANNUAL_REPORTS_DIR", tempfile.gettempdir()))


# -- the five steps of the seed's pipeline --------------------------------------------------


def fetch(company: int) -> tuple[int, str]:
    time.sleep(LATENCY)  # the network: a blocking wait, overlapped by threads
    return company, make_report(company)


async def fetch_async(company: int) -> tuple[int, str]:
    await asyncio.sleep(LATENCY)  # the network: an awaitable wait, overlapped by coroutines
    return company, make_report(company)


def save(item: tuple[int, str]) -> tuple[int, str]:
    company, text = item
    path = WORKDIR / f"report-{company}.txt"
    path.write_text(text)
    return company, str(path)


def split(item: tuple[int, str]) -> list[tuple[int, str]]:
    company, path = item
    return [(company, p) for p in Path(path).read_text().split("\n\n")]


def classify(item: tuple[int, str]) -> tuple[int, str, float]:
    company, paragraph = item  # a pair, or a JSON list from an exchange channel
    if not MODEL:  # an instance process: the training set is seeded, so the model is the same
        MODEL.update(training_set())
    label = predict(MODEL, paragraph)
    amount = sum(float(a) for a in AMOUNT.findall(paragraph)) if label == "finance" else 0.0
    return company, label, amount


def tally(stats: dict, row: tuple[int, str, float]) -> dict:
    company, label, amount = row
    entry = stats.setdefault(company, [0, 0, 0.0])
    entry[0] += 1
    entry[1] += label == "finance"
    entry[2] = round(entry[2] + amount, 1)
    return stats


# -- serial baseline and pipeline ------------------------------------------------------------


def serial(companies: range) -> dict:
    stats: dict = {}
    for company in companies:
        for paragraph in split(save(fetch(company))):
            tally(stats, classify(paragraph))
    return stats


def build(companies: range, kind: str = "thread", fetchers: int = 16) -> pl.Pipeline:
    """The pipeline: the I/O steps overlap; ``kind`` says where each step runs.

    kind: "thread" (threads fetch, classify runs in its stage thread), "async" (coroutines
    fetch), "process" (threads fetch, two worker processes classify).
    """
    fetch_stage = (
        pl.map(fetch_async, kind="async", workers=fetchers, name="fetch")
        if kind == "async"
        else pl.map(fetch, workers=fetchers, name="fetch")
    )
    classify_stage = (
        pl.map(classify, kind="process", workers=2, name="classify")
        if kind == "process"
        else pl.map(classify, name="classify")
    )
    return (
        pl.source(companies, name="companies")
        | fetch_stage
        | pl.map(save, workers=4, name="save")
        | pl.flat_map(split, name="split")
        | classify_stage
        | pl.reduce(tally, initial={}, name="statistics")
    )


# -- the same steps as pipe sets (--distributed) ----------------------------------------------

FETCH = PipeSet(
    "fetch", source="companies", fragment=pl.map(fetch, workers=16) | pl.map(save), output="saved"
)
SPLIT = PipeSet("split", source="saved", fragment=pl.flat_map(split), output="paragraphs")
CLASSIFY = PipeSet("classify", source="paragraphs", fragment=pl.map(classify), output="classified")


def distributed(companies: range, paragraphs: int, instances: int, url: str | None) -> tuple[dict, float]:
    """The statistics from the three pipe sets, and the seconds from the first report sent to
    the last paragraph tallied. ``url``: a running coordinator (else an embedded one)."""
    key = os.environ.setdefault("MINIPOOL_AUTHKEY", secrets.token_hex(16))
    os.environ["ANNUAL_REPORTS_DIR"] = str(WORKDIR)
    os.environ["ANNUAL_REPORTS_LATENCY"] = str(LATENCY)
    centre = None
    if url is None:
        from minipool.cluster.coordinator import Coordinator

        centre = Coordinator(key.encode())
        url = centre.serve("tcp://127.0.0.1:0")
    sets = [serve(FETCH, url), serve(SPLIT, url), serve(CLASSIFY, url, instances=instances)]
    try:
        with Producer(url) as producer:
            wanted = {"fetch": 1, "split": 1, "classify": instances}
            while any(len(producer.client.lookup(name)) < n for name, n in wanted.items()):
                time.sleep(0.05)  # the instances are starting and registering
            start = time.perf_counter()
            for company in companies:
                producer.send("companies", str(company))
        stats: dict = {}
        results = outflow("classified", address=url, group=f"statistics-{os.getpid()}", timeout=60)
        for _, row in zip(range(paragraphs), results, strict=False):
            tally(stats, tuple(row))
        results.close()
        return stats, time.perf_counter() - start
    finally:
        for served in sets:
            served.stop()
        if centre is not None:
            centre.close()


def main(argv: list[str] | None = None) -> int:
    global LATENCY, WORKDIR
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--latency", type=float, default=LATENCY, help="seconds per fetch")
    parser.add_argument("--kind", choices=["thread", "async", "process"], default="thread")
    parser.add_argument("--journal", help="directory for a durable channel")
    parser.add_argument("--distributed", action="store_true", help="run the steps as pipe sets")
    parser.add_argument("--instances", type=int, default=1, help="--distributed: classify processes")
    parser.add_argument("--connect", metavar="URL", help="--distributed: a running coordinator")
    args = parser.parse_args(argv)
    if not args.distributed and (args.instances != 1 or args.connect):
        parser.error("--instances and --connect go with --distributed")
    LATENCY = args.latency
    MODEL.update(training_set())
    with tempfile.TemporaryDirectory() as tmp:
        WORKDIR = Path(tmp)
        companies = range(args.reports)
        start = time.perf_counter()
        expected = serial(companies)
        serial_s = time.perf_counter() - start
        if args.distributed:
            paragraphs = sum(v[0] for v in expected.values())
            result, pipe_s = distributed(companies, paragraphs, args.instances, args.connect)
        else:
            start = time.perf_counter()
            with build(companies, args.kind).start(journal=args.journal) as run:
                result = run.result()
            pipe_s = time.perf_counter() - start
    if result != expected:
        print(
            f"{'distributed' if args.distributed else 'pipeline'} and serial results differ!", file=sys.stderr
        )
        return 1
    if args.distributed:
        print(f"{args.reports} reports, {paragraphs} paragraphs: identical statistics to the serial run")
        print(f"serial baseline           : {serial_s:6.2f} s  ({args.reports / serial_s:7.1f} reports/s)")
        print(
            f"pipe sets ({args.instances} classifier(s)) : {pipe_s:6.2f} s"
            f"  ({args.reports / pipe_s:7.1f} reports/s)  -> {serial_s / pipe_s:.1f}x the serial"
        )
        return 0
    paragraphs = sum(v[0] for v in result.values())
    financial = sum(v[1] for v in result.values())
    amount = sum(v[2] for v in result.values())
    print(
        f"{args.reports} reports, {paragraphs} paragraphs, {financial} classified as financial "
        f"analysis, {amount:,.1f} million mentioned"
    )
    print(f"serial baseline : {serial_s:6.2f} s  ({args.reports / serial_s:7.1f} reports/s)")
    skipped = run.resume_from
    if skipped:
        # A rerun over a journal: the statistics of the reports done before were restored from
        # it, and only the rest went through the pipeline, so no speed-up can be read here.
        print(
            f"resumed from the journal in {args.journal}: reports 0..{skipped - 1} were done by an "
            f"earlier run and skipped; this run processed {args.reports - skipped} of {args.reports} "
            f"in {pipe_s:.2f} s (not comparable with the serial baseline)"
        )
    else:
        print(
            f"pipeline ({args.kind:7}): {pipe_s:6.2f} s  ({args.reports / pipe_s:7.1f} reports/s)"
            f"  -> {serial_s / pipe_s:.1f}x the serial baseline"
        )
    print("\nper stage:\n" + run.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
