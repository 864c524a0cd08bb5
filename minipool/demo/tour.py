"""``python -m minipool.demo``: run the tour's steps, each with progress, and print (and save as
one HTML page) what they measured.

Each step runs one technique of the articles beside its peer, taking turns so a busy machine
slows both alike, and prints a table (workers, tasks, seconds, the figure that matters and the
peer's), the sentence it teaches and a verdict the numbers support.

    python -m minipool.demo                 # every step
    python -m minipool.demo --quick         # every step at small sizes, under a minute
    python -m minipool.demo --list          # the steps and what each teaches
    python -m minipool.demo --only pi,sum   # some steps
    python -m minipool.demo --html tour.html
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback

from ..bench.common import print_table
from . import steps as registry
from .report import SUMMARY_HEADERS, html_page, print_step, summary_rows
from .step import Context, Outcome, Step

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minipool.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--list", action="store_true", help="name the steps and what each teaches, then exit")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these steps (see --list)")
    parser.add_argument("--quick", action="store_true", help="small sizes: every step in under a minute")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes per pool")
    parser.add_argument("--html", metavar="PATH", help="also write one self-contained HTML page")
    args = parser.parse_args(argv)
    if args.list:
        for step in registry.STEPS:
            print(f"{step.name:12} {step.title}\n{'':12} {step.teaches}")
        return 0
    try:
        names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
        steps = registry.by_name(names) if names else registry.STEPS
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.ERROR, format="  [%(name)s] %(message)s")
    began = time.perf_counter()
    context = Context(args.workers, args.quick)
    done: list[tuple[Step, Outcome]] = []
    failed: list[str] = []
    try:
        for number, step in enumerate(steps, 1):
            context.say(f"[{number}/{len(steps)}] {step.name}: {step.title}")
            start = time.perf_counter()
            try:
                outcome = step.run(context)
            except Exception as exc:  # noqa: BLE001 - one broken step must not hide the others
                traceback.print_exc()
                context.say(f"[{number}/{len(steps)}] {step.name} FAILED: {exc!r}")
                failed.append(step.name)
                continue
            outcome.seconds = time.perf_counter() - start
            context.say(f"[{number}/{len(steps)}] {step.name} done in {outcome.seconds:.1f} s")
            print_step(step, outcome)
            done.append((step, outcome))
    finally:
        context.close()
    total = time.perf_counter() - began
    print_table(
        f"The tour on {os.cpu_count()} CPU(s), {total:.1f} s (single runs, peers measured in turns)",
        SUMMARY_HEADERS,
        summary_rows(done),
    )
    if args.html:
        command = "python -m minipool.demo " + " ".join(sys.argv[1:] if argv is None else argv)
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(html_page(done, command.strip(), total))
        print(f"\nwrote {args.html}")
    if failed:
        print(f"\nfailed: {', '.join(failed)} (the traceback of each is on stderr)")
        return 1
    return 0
