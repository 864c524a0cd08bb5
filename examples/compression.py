"""Compression on the wire (seed 000 §3.2): every codec's ratio and speed, and when it pays.

Seed 000 says compression "greatly reduces data volume, bandwidth and transfer time" and should
be used first. That holds only while the codec is faster than the link it saves time on. Sending
``S`` bytes over a link of ``B`` bytes/s takes ``S/B``; compressed, it takes ``S/c`` to compress
(``c``: compress speed), ``S/(r*B)`` to send (``r``: ratio) and ``S/d`` to decompress. So a codec
pays while

    B < (1 - 1/r) / (1/c + 1/d)          the break-even link speed

and costs time on any faster link. The script measures, on a fixed input of JSON log lines,
English-like text and random bytes (the generators of ``python -m minipool.bench codecs``),
each codec of ``minipool.codecs`` (median of ``--repeat`` runs), the seed's gzip levels 1 to 9,
and prints the break-even speed with a verdict for a 100 Mbit/s and a 1 Gbit/s link. Every
round trip is checked to give back the original bytes. The machine it runs on sets the MB/s;
the ratios are exact.

    python examples/compression.py [--size 1000000] [--repeat 3] [--link-mbit 100,1000]
"""

from __future__ import annotations

import argparse
import gzip
import sys

from minipool.bench.codecs import INPUTS
from minipool.bench.common import median_time
from minipool.codecs import LEVELS, available_codecs, get_codec
from minipool.errors import MissingExtra

MB = 1_000_000


def break_even(ratio: float, compress_mbs: float, decompress_mbs: float) -> float:
    """The link speed (MB/s) below which compressing makes a transfer faster; 0: never."""
    if ratio <= 1:
        return 0.0
    return (1 - 1 / ratio) / (1 / compress_mbs + 1 / decompress_mbs)


def measure(compress, decompress, data: bytes, repeat: int) -> tuple[float, float, float]:
    """Ratio, compress MB/s and decompress MB/s of one codec on ``data``."""
    packed = compress(data)
    if decompress(packed) != data:
        raise AssertionError("the round trip changed the data")
    seconds_c = median_time(lambda: compress(data), repeat)
    seconds_d = median_time(lambda: decompress(packed), repeat)
    return len(data) / len(packed), len(data) / seconds_c / MB, len(data) / seconds_d / MB


def verdicts(even: float, links: list[float]) -> str:
    return "  ".join(f"{'pays ' if even > mbit / 8 else 'costs'}" for mbit in links)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="bytes of each input")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--link-mbit", default="100,1000", help="link speeds to judge, Mbit/s")
    args = parser.parse_args()
    links = [float(x) for x in args.link_mbit.split(",")]
    link_heads = "  ".join(f"{mbit:g} Mbit/s" for mbit in links)
    print(
        f"break-even: the link speed below which a codec makes the transfer faster ({args.size:,} B inputs)"
    )
    print(
        f"{'input':<7} {'codec':<8} {'ratio':>6} {'comp MB/s':>9} {'dec MB/s':>9} "
        f"{'break-even MB/s':>15}  {link_heads}"
    )
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for input_name in ("logs", "text", "random"):
        data = INPUTS[input_name](args.size)
        for name in available_codecs():
            if name == "none":
                continue
            try:
                codec = get_codec(name)
            except MissingExtra as exc:  # zstd without the zstandard package
                print(f"{input_name:<7} {name:<8} skipped: {exc}")
                continue
            ratio, c, d = measure(
                codec.compress, lambda b, codec=codec: codec.decompress(b, args.size), data, args.repeat
            )
            even = break_even(ratio, c, d)
            results[input_name, name] = ratio, even
            print(
                f"{input_name:<7} {name:<8} {ratio:6.2f} {c:9.1f} {d:9.1f} "
                f"{even:15.1f}  {verdicts(even, links)}"
            )

    print(f"\nthe seed's gzip levels on logs (minipool's gzip codec uses level {LEVELS['gzip']})")
    print(f"{'level':>5} {'ratio':>6} {'comp MB/s':>9} {'dec MB/s':>9} {'break-even MB/s':>15}  {link_heads}")
    data = INPUTS["logs"](args.size)
    levels = {}
    for level in range(1, 10):
        ratio, c, d = measure(
            lambda b, level=level: gzip.compress(b, level), gzip.decompress, data, args.repeat
        )
        even = break_even(ratio, c, d)
        levels[level] = ratio, c
        print(f"{level:5} {ratio:6.2f} {c:9.1f} {d:9.1f} {even:15.1f}  {verdicts(even, links)}")

    gzip_logs = results["logs", "gzip"][0]
    never = [name for (input_name, name), (_, even) in results.items() if input_name == "random" and even > 0]
    ok = gzip_logs > 3 and not never and levels[9][0] >= levels[1][0]  # ratios only: speeds are noisy
    print(
        f"\nlogs shrink {gzip_logs:.1f}x with gzip; random bytes never pay; level 9 compresses "
        f"{levels[1][1] / levels[9][1]:.1f}x slower than level 1 "
        f"for {levels[9][0] / levels[1][0]:.2f}x the ratio"
    )
    verdict = "yes" if ok else "NO"
    print(f"every round trip gave back the original bytes, logs shrink, random never pays: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
