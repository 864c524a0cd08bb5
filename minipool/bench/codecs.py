"""Compression ratio and speed of each codec, and what minipool's wrapper costs.

Three inputs, generated from a fixed seed so every run compresses the same bytes:

* ``text``   -- English-like prose (Zipf-distributed words, sentences, paragraphs);
* ``logs``   -- JSON log lines, one object per line, as a service would ship them;
* ``random`` -- random bytes, the incompressible case (and the shape of already-compressed data).

For each codec and input: the ratio (original / compressed), compress and decompress MB/s
(MB = 10**6 bytes of *uncompressed* data per second, median of ``--repeat`` runs). A second
table compares :mod:`minipool.codecs` with calling zlib, lzma, bz2 and zstandard directly at
the same level, in the same run, on a whole input and on 1 KB messages (where per-call costs
show): the "overhead" is how much slower the minipool path is (negative = noise).
"""

from __future__ import annotations

import argparse
import bz2
import functools
import json
import lzma
import random
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from .. import codecs
from .common import median_time, print_table, progress

MB = 1_000_000

_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more can out up about into than them some could time only other new these "
    "two may first then do any like my now over such our man me even most made after also "
    "did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men "
    "work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three "
    "coordinator worker task queue message network compression latency throughput"
).split()


def english_text(size: int, seed: int = 1) -> bytes:
    """Prose-like bytes: Zipf-weighted words, capitalised sentences, paragraph breaks."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(_WORDS))]
    out: list[str] = []
    length = 0
    while length < size:
        words = rng.choices(_WORDS, weights, k=rng.randint(6, 24))
        sentence = " ".join(words).capitalize() + rng.choice(".....?!") + " "
        if rng.random() < 0.15:
            sentence += "\n\n"
        out.append(sentence)
        length += len(sentence)
    return "".join(out).encode()[:size]


def json_logs(size: int, seed: int = 2) -> bytes:
    """JSON lines such as a web service logs: timestamps, levels, paths, latencies, ids."""
    rng = random.Random(seed)
    paths = ["/api/tasks", "/api/tasks/{}", "/api/workers", "/health", "/api/results/{}"]
    levels = ["INFO"] * 8 + ["WARNING", "ERROR"]
    lines: list[bytes] = []
    length, ts = 0, 1_700_000_000.0
    while length < size:
        ts += rng.expovariate(50)
        record = {
            "ts": round(ts, 3),
            "level": rng.choice(levels),
            "logger": rng.choice(["minipool.coordinator", "minipool.worker", "http"]),
            "method": rng.choice(["GET", "GET", "POST"]),
            "path": rng.choice(paths).format(rng.randrange(100_000)),
            "status": rng.choice([200] * 20 + [201, 404, 500]),
            "latency_ms": round(rng.lognormvariate(1.5, 0.8), 2),
            "worker": f"w-{rng.randrange(16):02d}",
            "task_id": f"{rng.getrandbits(64):016x}",
        }
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        lines.append(line)
        length += len(line)
    return b"".join(lines)[:size]


def random_bytes(size: int, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(size)


INPUTS: dict[str, Callable[[int], bytes]] = {
    "text": english_text,
    "logs": json_logs,
    "random": random_bytes,
}


def _gzip_compress(level: int) -> Callable[[bytes], bytes]:
    """zlib's gzip framing in one call where Python has it (``wbits`` came in 3.11)."""
    if sys.version_info >= (3, 11):
        return lambda d: zlib.compress(d, level, 31)

    def compress(data: bytes) -> bytes:
        obj = zlib.compressobj(level, zlib.DEFLATED, 31)
        return obj.compress(data) + obj.flush()

    return compress


def direct_calls(name: str) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | None:
    """(compress, decompress) calling the library itself at minipool's level, or None."""
    level = codecs.LEVELS.get(name)
    if level is None:  # "none", or a codec from elsewhere: no library call to compare with
        return None
    if name == "gzip":
        return _gzip_compress(level), (lambda d: zlib.decompress(d, 31))
    if name == "deflate":
        return (lambda d: zlib.compress(d, level)), zlib.decompress
    if name == "lzma":
        return (lambda d: lzma.compress(d, preset=level)), lzma.decompress
    if name == "bz2":
        return (lambda d: bz2.compress(d, level)), bz2.decompress
    if name == "zstd":
        import zstandard

        c, d = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
        return c.compress, d.decompress
    return None


def _interleaved(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Best time of each function, alternating them so that machine noise hits all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _overhead(ours: float, theirs: float) -> float:
    return round(100.0 * (ours - theirs) / theirs, 1)


def measure_overhead(name: str, data: bytes, repeat: int, small_calls: int) -> dict[str, Any]:
    direct = direct_calls(name)
    assert direct is not None
    codec = codecs.get_codec(name)
    raw_c, raw_d = direct
    packed = raw_c(data)
    small = data[:1024]
    small_packed = raw_c(small)
    limit = codecs.DEFAULT_MAX_SIZE

    def loop(fn: Callable[..., bytes], arg: bytes, *extra: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(small_calls):
                fn(arg, *extra)

        return run

    c_ours, c_raw, d_ours, d_raw = _interleaved(
        [
            lambda: codec.compress(data),
            lambda: raw_c(data),
            lambda: codec.decompress(packed, limit),
            lambda: raw_d(packed),
        ],
        repeat,
    )
    sc_ours, sc_raw, sd_ours, sd_raw = _interleaved(
        [
            loop(codec.compress, small),
            loop(raw_c, small),
            loop(codec.decompress, small_packed, limit),
            loop(raw_d, small_packed),
        ],
        repeat,
    )
    return {
        "codec": name,
        "compress_overhead_pct": _overhead(c_ours, c_raw),
        "decompress_overhead_pct": _overhead(d_ours, d_raw),
        "compress_1k_overhead_pct": _overhead(sc_ours, sc_raw),
        "decompress_1k_overhead_pct": _overhead(sd_ours, sd_raw),
        "compress_1k_us": round(1e6 * sc_ours / small_calls, 2),
        "decompress_1k_us": round(1e6 * sd_ours / small_calls, 2),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=float, default=2.0, help="MB per input (default 2)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median; default 5)")
    parser.add_argument(
        "--codecs", default=None, help="comma-separated codec names (default: every available codec)"
    )
    parser.add_argument(
        "--inputs",
        default=",".join(INPUTS),
        help="comma-separated inputs among text,logs,random (default: all)",
    )
    parser.add_argument(
        "--small-calls",
        type=int,
        default=300,
        help="1 KB calls per timing in the overhead table (default 300)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.size * MB)
    names = args.codecs.split(",") if args.codecs else codecs.available_codecs()
    inputs = {key: INPUTS[key](size) for key in args.inputs.split(",")}
    rows: list[list[object]] = []
    results: list[dict[str, Any]] = []
    for input_name, data in inputs.items():
        for name in names:
            if name == "none":  # returns its input unchanged: ratio 1, no work to time
                continue
            codec = codecs.get_codec(name)
            progress(f"{name} on {input_name} ({len(data) / MB:.1f} MB)")
            packed = codec.compress(data)
            assert codec.decompress(packed, len(data)) == data
            t_c = median_time(functools.partial(codec.compress, data), args.repeat)
            t_d = median_time(functools.partial(codec.decompress, packed, len(data)), args.repeat)
            row = {
                "input": input_name,
                "codec": name,
                "level": codecs.LEVELS.get(name, "-"),
                "ratio": round(len(data) / max(1, len(packed)), 2),
                "compress_mb_s": round(len(data) / MB / t_c, 1),
                "decompress_mb_s": round(len(data) / MB / t_d, 1),
            }
            results.append(row)
            rows.append(list(row.values()))
    print_table(
        f"Ratio and speed (MB/s of uncompressed data, median of {args.repeat} runs)",
        ["input", "codec", "level", "ratio", "compress MB/s", "decompress MB/s"],
        rows,
    )

    overhead: list[dict[str, Any]] = []
    sample = next(iter(inputs.values()))
    for name in names:
        if direct_calls(name) is None:
            continue
        progress(f"{name}: minipool.codecs vs the library, same run")
        # Best-of-N of a difference needs more runs than a median to settle on a busy machine.
        overhead.append(measure_overhead(name, sample, 2 * args.repeat, args.small_calls))
    print_table(
        f"Wrapper overhead vs calling the library directly (best of {2 * args.repeat}, "
        f"on {next(iter(inputs))}; + = minipool slower)",
        [
            "codec",
            f"compress {args.size:g} MB %",
            f"decompress {args.size:g} MB %",
            "compress 1 KB %",
            "decompress 1 KB %",
            "compress 1 KB µs",
            "decompress 1 KB µs",
        ],
        [list(row.values()) for row in overhead],
    )
    return {
        "size_bytes": size,
        "repeat": args.repeat,
        "levels": codecs.LEVELS,
        "codecs": results,
        "overhead": overhead,
    }
