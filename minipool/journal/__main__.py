"""``python -m minipool.journal [DIR]``: appends per second under every fsync policy, 1 and 8 threads."""

from __future__ import annotations

import sys
import tempfile

from .log import measure_appends


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory(dir=argv[0] if argv else None) as where:
        for policy, count in (("always", 4000), ("everysec", 100_000), ("no", 100_000)):
            for threads in (1, 8):
                rate = measure_appends(where, fsync=policy, threads=threads, records=count)
                print(f"fsync={policy:<8} threads={threads}  {rate:>10,.0f} appends/s")


if __name__ == "__main__":
    main(sys.argv[1:])
