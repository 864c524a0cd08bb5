"""One workload over HTTP and over WebSocket, with and without compression, side by side.

Seed 000 §3.1 claims HTTP "cannot compress data" and concludes that WebSocket should be
preferred. HTTP has compressed bodies since HTTP/1.1 (``Content-Encoding: gzip``, RFC 9110
§8.4), and WebSocket compresses only with an extension (``permessage-deflate``, RFC 7692). In
minipool the question does not even arise at the transport: a codec compresses each task's and
each result's body before any transport sees it, so ``codec="gzip"`` shrinks the bytes on
``http://`` exactly as on ``ws://``. What does differ is the framing: HTTP pays request headers
on the way up, WebSocket a 2-14 byte frame header each way (docs/transports.md).

For each transport and codec the script runs an embedded pool (1 worker) behind a
:class:`~minipool.chaos.ChaosProxy` that counts the bytes the client's connection carries and
limits it to ``--bandwidth`` bytes/s each way (a slow link, where compression pays), then sends
the same 40 chunks of JSON log lines from ``Pool(address=<proxy>)``; each task returns the
chunk's warning and error lines. It prints bytes up and down and seconds per run, and checks
that every run returns the serial result and that gzip cut the bytes at least 3x on both
transports.

    python examples/http_vs_websocket.py [--chunks 40] [--chunk-size 50000] [--bandwidth 4e6]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time

from minipool import Pool
from minipool.bench.codecs import json_logs
from minipool.chaos import ChaosProxy


def warnings_and_errors(chunk: bytes) -> bytes:
    """The map step: keep the log lines a person should read."""
    return b"".join(line for line in chunk.splitlines(keepends=True) if b'"level":"INFO"' not in line)


def run(transport: str, codec: str, chunks: list[bytes], bandwidth: float) -> tuple[list[bytes], dict, float]:
    key = secrets.token_hex(32)
    with Pool(1, transport=transport, authkey=key) as host:
        host.wait_for_workers()
        with ChaosProxy(host.address.split("://")[1], bandwidth=bandwidth) as proxy:
            with Pool(address=proxy.url(transport), authkey=key, codec=codec) as client:
                client.submit(len, b"warm up").result(timeout=30)  # connection opened, not timed
                before = proxy.counters()
                start = time.perf_counter()
                results = list(client.map(warnings_and_errors, chunks))
                seconds = time.perf_counter() - start
                after = proxy.counters()
    moved = {way: after[way] - before[way] for way in ("bytes_up", "bytes_down")}
    return results, moved, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--chunk-size", type=int, default=50_000, help="bytes of log lines per task")
    parser.add_argument("--bandwidth", type=float, default=4e6, help="bytes/s each way on the link")
    args = parser.parse_args()
    logs = json_logs(args.chunks * args.chunk_size)
    cut = [logs.rfind(b"\n", 0, i * args.chunk_size) + 1 for i in range(1, args.chunks)]
    chunks = [logs[a:b] for a, b in zip([0, *cut], [*cut, len(logs)], strict=True)]
    expected = [warnings_and_errors(c) for c in chunks]

    print(
        f"{args.chunks} tasks, {len(logs):,} B of JSON logs up, "
        f"a link of {args.bandwidth / 1e6:g} MB/s each way"
    )
    print(f"{'transport':<10} {'codec':<6} {'bytes up':>11} {'bytes down':>11} {'seconds':>8}")
    bytes_moved: dict[tuple[str, str], int] = {}
    took: dict[tuple[str, str], float] = {}
    right = True
    for transport in ("http", "ws"):
        for codec in ("none", "gzip"):
            results, moved, seconds = run(transport, codec, chunks, args.bandwidth)
            right &= results == expected
            bytes_moved[transport, codec] = moved["bytes_up"] + moved["bytes_down"]
            took[transport, codec] = seconds
            print(
                f"{transport:<10} {codec:<6} {moved['bytes_up']:>11,} "
                f"{moved['bytes_down']:>11,} {seconds:>8.2f}"
            )

    shrink = {t: bytes_moved[t, "none"] / bytes_moved[t, "gzip"] for t in ("http", "ws")}
    faster = {t: took[t, "none"] / took[t, "gzip"] for t in ("http", "ws")}
    for t in ("http", "ws"):
        print(f"gzip over {t}://: {shrink[t]:.1f}x fewer bytes, {faster[t]:.1f}x faster on this link")
    ok = right and min(shrink.values()) > 3
    print(f"HTTP compresses as well as WebSocket, results match a serial run: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
