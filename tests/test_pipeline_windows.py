"""Windows by count and by event time, keyed windows and rolling aggregation."""

from __future__ import annotations

import pytest

from minipool import pipeline as pl
from minipool.pipeline import Window


def test_count_windows_tumbling_and_sliding():
    assert (pl.source(range(7)) | pl.window(size=3)).run() == [[0, 1, 2], [3, 4, 5], [6]]
    assert (pl.source(range(6)) | pl.window(size=4, step=2)).run() == [[0, 1, 2, 3], [2, 3, 4, 5]]
    assert (pl.source(range(7)) | pl.window(size=4, step=2)).run() == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6]]
    # step larger than size: hopping windows with gaps
    assert (pl.source(range(10)) | pl.window(size=2, step=4)).run() == [[0, 1], [4, 5], [8, 9]]


def test_keyed_count_windows():
    data = [("a", 1), ("b", 2), ("a", 3), ("a", 5), ("b", 4)]
    out = (pl.source(data) | pl.window(size=2, key=lambda r: r[0])).run()
    assert out == [("a", [("a", 1), ("a", 3)]), ("b", [("b", 2), ("b", 4)]), ("a", [("a", 5)])]


def test_event_time_tumbling_windows():
    events = [(0.5, "x"), (1.2, "y"), (1.9, "z"), (3.1, "w")]
    out = (pl.source(events) | pl.window(seconds=1, timestamp=lambda e: e[0])).run()
    assert out == [
        Window(0, 1, [(0.5, "x")]),
        Window(1, 2, [(1.2, "y"), (1.9, "z")]),
        Window(3, 4, [(3.1, "w")]),
    ]


def test_event_time_sliding_windows():
    events = [0.5, 1.5, 2.5]
    out = (pl.source(events) | pl.window(seconds=2, step=1, timestamp=float)).run()
    assert [(w.start, w.end, w.records) for w in out] == [
        (-1, 1, [0.5]),
        (0, 2, [0.5, 1.5]),
        (1, 3, [1.5, 2.5]),
        (2, 4, [2.5]),
    ]


def test_keyed_time_windows_count_per_key():
    logs = [(t / 10, "GET" if t % 3 else "POST") for t in range(30)]
    out = (
        pl.source(logs)
        | pl.window(seconds=1, key=lambda r: r[1], timestamp=lambda r: r[0])
        | pl.map(lambda kw: (kw[0], kw[1].start, len(kw[1].records)))
    ).run()
    assert sorted(out) == sorted(
        (m, float(s), sum(1 for t in range(s * 10, s * 10 + 10) if ("GET" if t % 3 else "POST") == m))
        for s in range(3)
        for m in ("GET", "POST")
    )


def test_processing_time_window_closes_without_new_records():
    import itertools
    import time

    def trickle():
        for i in itertools.count():
            time.sleep(0.02)
            yield i

    gen = (pl.source(trickle) | pl.window(seconds=0.1)).stream()
    first = next(gen)
    gen.close()
    assert isinstance(first, Window) and first.records == sorted(first.records)


def test_rolling_by_count_and_by_time():
    assert (pl.source([1, 2, 3, 4]) | pl.rolling(sum, size=2)).run() == [1, 3, 5, 7]
    clicks = [(0, "u"), (1, "v"), (2, "u"), (5, "u")]
    out = (pl.source(clicks) | pl.rolling(len, seconds=3, key=lambda c: c[1], timestamp=lambda c: c[0])).run()
    assert out == [("u", 1), ("v", 1), ("u", 2), ("u", 1)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: pl.window(size=0),
        lambda: pl.window(size=2, step=0),
        lambda: pl.window(seconds=-1),
        lambda: pl.rolling(sum),
        lambda: pl.rolling(sum, size=0),
        lambda: pl.window(seconds=1, step=0),
    ],
)
def test_bad_window_arguments(make):
    with pytest.raises(pl.PipelineError):
        make()
