"""Round trip and throughput of every minipool transport beside a raw socket and its peers.

Technique: *measure against a floor, in the same run*. A loopback round trip costs a few tens
of microseconds, and a shared machine drifts by more than that between runs, so every figure
here is a ratio to a raw length-prefixed socket echo measured minutes apart at most. Beside
minipool's transports (tcp, tls, http, ws, zmq+tcp) run the libraries a user would otherwise
pick: ``multiprocessing.connection``, ``http.server`` + ``http.client`` (TCP_NODELAY on, as a
careful user would set it), the ``websockets`` library and pyzmq REQ/REP.

The echo servers (each in a process of its own) and their clients are in
:mod:`minipool.bench.echo`; this module times them. The implementations take turns, round after
round. Round trip = the median of many one-at-a-time echoes within a turn, from the quietest
turn (the JSON also has the median over all turns).

Round trips are timed twice in each turn: as the scheduler places the threads, and with the
client and its echo server pinned to *one core* (Linux, 2 cores or more). On a virtual machine a
wake-up that crosses cores can cost more than the whole software path of a small message, and
where the scheduler puts a pair of processes is decided when they start and kept for the run --
so a 1 KB round trip that wakes four threads (ZeroMQ's I/O threads, on both sides) lands near
one figure or near twice it, run by run. Pinned, every wake-up is a switch on one core: the
one-core column measures what each implementation's own code costs, and is steady to a few
percent from run to run; the other column shows what a user gets from the scheduler.
Throughput = payload MB/s echoed while a sender thread streams messages and the main thread
receives them (lockstep peers -- http.client, REQ/REP, websockets' sync client -- cannot
stream: their figure is one message at a time). With ``--codecs``, the client compresses
before sending and decompresses what comes back. ``--no-nodelay`` turns TCP_NODELAY off
everywhere, to show the Nagle / delayed-ACK stall of a header and a body written separately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

from .chart import loglog_chart
from .common import CAN_PIN, on_one_core, print_table, progress
from .echo import PEERS, TRANSPORTS, EchoClient, EchoPair, unavailable

if TYPE_CHECKING:
    from ..codecs import Codec

SIZES = {"64B": 64, "1KB": 1024, "64KB": 64 * 1024, "1MB": 1 << 20, "16MB": 16 << 20}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help="minipool transports to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="other implementations beside them; raw is always run (default: %(default)s)",
    )
    parser.add_argument("--sizes", default=",".join(SIZES), help="payload sizes (default: %(default)s)")
    parser.add_argument("--codecs", default="none", help="comma-separated codec names (default: none)")
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="minipool transports without the CRC-32 every minipool message carries",
    )
    parser.add_argument("--quick", action="store_true", help="1 KB and 1 MB only, short runs (< 20 s)")
    parser.add_argument(
        "--budget", type=float, default=0.5, help="seconds spent on each round-trip and each throughput cell"
    )
    parser.add_argument("--svg", metavar="PATH", help="write a log-log chart of round trip by size")


# -- measuring ------------------------------------------------------------------------------


def _payload(size: int) -> bytes:
    # Compressible like real task arguments (a text log), so the codec columns mean something.
    line = b"2024-05-01T12:00:00Z worker-7 task=%08d status=done elapsed_ms=%04d\n"
    out = bytearray()
    i = 0
    while len(out) < size:
        out += line % (i, i % 997)
        i += 1
    return bytes(out[:size])


def _round_trips(client: EchoClient, data: bytes, codec: Codec, seconds: float, out: list[float]) -> None:
    stop = time.perf_counter() + seconds
    for i in range(20000):
        if i >= 3 and time.perf_counter() > stop:
            return
        start = time.perf_counter()
        client.send(codec.compress(data))
        codec.decompress(client.recv(), len(data))
        out.append(time.perf_counter() - start)


def _round_trips_on_one_core(
    r: EchoPair, data: bytes, codec: Codec, seconds: float, out: list[float]
) -> None:
    """As _round_trips, with the client process and ``r``'s echo server pinned to one core."""
    with on_one_core([os.getpid(), r.server_pid]):
        _round_trips(r.client, data, codec, seconds, out)


def _stream(client: EchoClient, data: bytes, codec: Codec, count: int) -> float:
    """Echo ``count`` messages (streamed if the client can); return the seconds taken."""
    start = time.perf_counter()
    if client.streams:
        sender = threading.Thread(target=lambda: [client.send(codec.compress(data)) for _ in range(count)])
        sender.start()
        for _ in range(count):
            codec.decompress(client.recv(), len(data))
        sender.join()
    else:
        for _ in range(count):
            client.send(codec.compress(data))
            codec.decompress(client.recv(), len(data))
    return time.perf_counter() - start


_ROUNDS = 10  # each cell's time is split into rounds, implementations taking turns


def _measure_cell(
    running: list[EchoPair], data: bytes, codec: Codec, budget: float
) -> dict[str, tuple[float, float, float, float | None]]:
    """Round trip (seconds), MB/s, the median round trip over all turns, and the round trip
    on one core (None where threads cannot be pinned), per implementation.

    The implementations take turns, round after round, so a burst of load on the shared
    machine hits all of them alike instead of whichever happened to be running.
    """
    size = len(data)
    samples: dict[str, list[float]] = {r.kind: [] for r in running}
    moved: dict[str, list[float]] = {r.kind: [0.0, 0.0] for r in running}  # bytes, seconds
    streamed = max(1, min(4000, int(budget * 100e6 / max(size, 1) / _ROUNDS)))
    for r in running:  # warm up: buffers, TLS session, caches
        r.client.send(codec.compress(data))
        r.client.recv()
    turns: dict[str, list[float]] = {r.kind: [] for r in running}  # median of each turn
    pinned: dict[str, list[float]] = {r.kind: [] for r in running}  # the same, on one core
    for round_no in range(_ROUNDS):
        order = running[round_no % len(running) :] + running[: round_no % len(running)]
        for r in order:
            turn: list[float] = []
            _round_trips(r.client, data, codec, budget / _ROUNDS, turn)
            turns[r.kind].append(statistics.median(turn))
            samples[r.kind] += turn
            if CAN_PIN:
                turn = []
                _round_trips_on_one_core(r, data, codec, budget / _ROUNDS, turn)
                pinned[r.kind].append(statistics.median(turn))
            count = streamed if r.client.streams else max(1, min(streamed, 60))
            moved[r.kind][0] += count * size
            moved[r.kind][1] += _stream(r.client, data, codec, count)
    # The best turn's median: a burst of other load on the machine slows some turns, never
    # speeds one up, so the quietest turn is the truest figure (as timeit reports its minimum).
    return {
        kind: (
            min(turns[kind]),
            moved[kind][0] / moved[kind][1] / 1e6,
            statistics.median(samples[kind]),
            min(pinned[kind]) if pinned[kind] else None,
        )
        for kind in samples
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..codecs import get_codec

    unknown = [k for k in args.sizes.split(",") if k and k not in SIZES]
    if unknown:
        raise SystemExit(
            f"bench transports: unknown size {', '.join(unknown)} (choose from {', '.join(SIZES)})"
        )
    sizes = {k: SIZES[k] for k in args.sizes.split(",") if k}
    if args.quick:
        sizes = {k: v for k, v in sizes.items() if k in ("1KB", "1MB")} or sizes
        args.budget = min(args.budget, 0.1)
    codecs = [c for c in args.codecs.split(",") if c] or ["none"]
    impls = ["raw"] + [p for p in args.peers.split(",") if p and p != "raw"]
    impls += [t for t in args.transports.split(",") if t]
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    running: list[EchoPair] = []
    try:
        for kind in dict.fromkeys(impls):
            reason = unavailable(kind) if kind != "raw" else None
            try:
                if not reason:
                    running.append(EchoPair(kind, not args.no_nodelay, not args.no_check))
            except Exception as exc:  # noqa: BLE001 -- one broken implementation must not end the run
                reason = f"failed to start: {exc!r}"
            if reason:
                skipped[kind] = reason
                progress(f"skipping {kind}: {reason}")
        # One unrecorded cell first: without it the first payload size measured looked up to
        # twice as slow as the same size measured later (threads starting, the interpreter
        # specializing, socket buffers growing).
        _measure_cell(running, _payload(1024), get_codec("none"), 0.1)
        for codec_name in codecs:
            codec = get_codec(codec_name)
            for label, size in sizes.items():
                budget = args.budget * (2 if size >= 1 << 20 else 1)
                cell = _measure_cell(running, _payload(size), codec, budget)
                for r in running:
                    rtt, mbps, rtt_all, rtt_one = cell[r.kind]
                    one = "" if rtt_one is None else f" (one core {rtt_one * 1e6:.1f})"
                    progress(
                        f"{r.kind:16} {codec_name:7} {label:5} rtt {rtt * 1e6:9.1f} us{one}  {mbps:8.1f} MB/s"
                    )
                    rows.append(
                        {
                            "impl": r.kind,
                            "minipool": r.kind in TRANSPORTS,
                            "codec": codec_name,
                            "size": size,
                            "label": label,
                            "rtt_us": rtt * 1e6,
                            "mb_s": mbps,
                            "rtt_us_all_turns": rtt_all * 1e6,
                            "rtt_one_core_us": None if rtt_one is None else rtt_one * 1e6,
                            "streaming": r.client.streams,
                        }
                    )
    finally:
        for r in running:
            r.stop()
    floor = {(row["codec"], row["size"]): row for row in rows if row["impl"] == "raw"}
    for row in rows:
        base = floor.get((row["codec"], row["size"]))
        row["rtt_ratio"] = row["rtt_us"] / base["rtt_us"] if base else None
        one, base_one = row["rtt_one_core_us"], base and base["rtt_one_core_us"]
        row["rtt_one_core_ratio"] = one / base_one if one and base_one else None
        row["mb_s_ratio"] = row["mb_s"] / base["mb_s"] if base else None
    columns = ["implementation", "codec", "size", "rtt us", "rtt / raw", "MB/s", "MB/s / raw"]
    if CAN_PIN:
        columns[5:5] = ["1 core us", "1 core / raw"]
    table = []
    for row in rows:
        line = [
            row["impl"] + ("" if row["minipool"] else " (peer)"),
            row["codec"],
            row["label"],
            row["rtt_us"],
            row["rtt_ratio"] or 0.0,
            row["mb_s"],
            row["mb_s_ratio"] or 0.0,
        ]
        if CAN_PIN:
            line[5:5] = [row["rtt_one_core_us"] or 0.0, row["rtt_one_core_ratio"] or 0.0]
        table.append(line)
    title = "Echo over loopback" + (" with Nagle's algorithm ON (--no-nodelay)" if args.no_nodelay else "")
    print_table(title, columns, table)
    for kind, reason in skipped.items():
        print(f"skipped {kind}: {reason}")
    if args.svg:
        series: dict[str, list[tuple[float, float]]] = {}
        for row in rows:
            if row["codec"] == codecs[0]:
                series.setdefault(row["impl"], []).append((row["size"], row["rtt_us"]))
        dashed = {row["impl"] for row in rows if not row["minipool"]}
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(
                loglog_chart(
                    series,
                    dashed,
                    f"{title}: round trip by payload size (codec {codecs[0]})",
                    x_names={v: k for k, v in SIZES.items()},
                    y_label="round trip, microseconds (log scale)",
                )
            )
        print(f"\nwrote {args.svg}")
    return {
        "rows": rows,
        "skipped": skipped,
        "nodelay": not args.no_nodelay,
        "sizes": sizes,
        "codecs": codecs,
    }
