"""``python -m minipool.bench NAME [--json PATH]``: NAME is one of BENCHMARKS below."""

from __future__ import annotations

import argparse
import importlib
import sys

from .common import write_json

BENCHMARKS = {
    "dispatch": "per-task dispatch and map throughput vs multiprocessing.Pool and ProcessPoolExecutor",
    "nested": "recursive Fibonacci of child tasks (kept and stolen, or via the coordinator) vs serial",
    "handoff": "an echo from a process whose other thread computes, by GIL switch interval, vs an idle one",
    "codecs": "compression ratio and MB/s of each codec on text, JSON logs and random bytes",
    "transports": "round trip and throughput of every transport beside a raw socket",
    "pipeline": "records/s and memory of the annual-report pipeline by stage and channel kind",
    "streaming": "a per-key tumbling event-time window count: minipool vs Bytewax vs a plain loop",
    "balance": "balancing policies with one slowed worker among fast ones",
    "rpc": "remote method calls: minipool.rpc vs multiprocessing.managers and xmlrpc",
    "checksum": "a large message's CRC-32: what it costs and whether overlapping it with the copy hides it",
    "topics": "a consumer group vs Redis Streams: throughput, fsync's cost, latency, a large topic",
    "pipesets": "seed 001's experiment: pipe sets over exchange channels vs fast pipes vs one process",
    "backups": "exchange latency while the centre backs up its group positions, vs under the lock",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minipool.bench", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    modules = {}
    for name, help_text in BENCHMARKS.items():
        try:
            module = importlib.import_module(f"minipool.bench.{name}")
        except ImportError as exc:
            if exc.name != f"minipool.bench.{name}":
                raise
            continue
        modules[name] = module
        p = sub.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
        module.add_arguments(p)
    args = parser.parse_args(argv)
    results = modules[args.name].run(args)
    write_json(args.json, args.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
