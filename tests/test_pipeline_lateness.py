"""Event-time windows with a watermark, allowed lateness, updates and a late side output;
micro-batches by count and by time."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipool import pipeline as pl
from minipool.pipeline import Window


def ts(record):
    return record[0]


def test_late_record_within_lateness_updates_its_window():
    # window [0,10) fires when 12 arrives; 5 is late but allowed (watermark 12 < 10 + 5)
    events = [(1, "a"), (12, "b"), (5, "c"), (16, "d"), (7, "e"), (30, "f")]
    with (pl.source(events) | pl.window(seconds=10, timestamp=ts, lateness=5, late="late")).start() as run:
        out = run.result()
        late = run.side_output("late")
    assert out == [
        Window(0, 10, [(1, "a")]),
        Window(0, 10, [(1, "a"), (5, "c")], update=1),  # an update: every record, not a delta
        Window(10, 20, [(12, "b"), (16, "d")]),
        Window(30, 40, [(30, "f")]),
    ]
    # 7 arrived when the watermark was 16 >= 10 + 5: window [0,10) was purged
    assert late == [(7, "e")]
    assert run.stats()[1].late == 1


def test_without_lateness_a_late_record_goes_to_the_side_output_not_nowhere():
    events = [(1, "a"), (12, "b"), (5, "c")]
    seen = []
    out = (pl.source(events) | pl.window(seconds=10, timestamp=ts, late=seen.append)).run()
    assert out == [Window(0, 10, [(1, "a")]), Window(10, 20, [(12, "b")])]
    assert seen == [(5, "c")]


def test_delay_holds_the_watermark_back_so_out_of_order_records_are_on_time():
    events = [(1, "a"), (12, "b"), (5, "c"), (14, "d"), (25, "e")]
    with (pl.source(events) | pl.window(seconds=10, timestamp=ts, delay=3, late="late")).start() as run:
        out = run.result()
    # the watermark after 12 is 9, so [0,10) is still open when 5 arrives; 14 moves it to 11
    assert out == [Window(0, 10, [(1, "a"), (5, "c")]), Window(10, 20, [(12, "b"), (14, "d")]),
                   Window(20, 30, [(25, "e")])]  # fmt: skip
    assert run.side_output("late") == [] and run.side_output("other") == []


def test_a_late_record_opening_a_new_window_within_lateness_fires_it_at_once():
    events = [(25, "a"), (3, "b"), (26, "c")]
    out = (pl.source(events) | pl.window(seconds=10, timestamp=ts, lateness=30)).run()
    # [0,10) never had a record; 3 is within lateness, so it fires on arrival, before [20,30)
    assert out == [Window(0, 10, [(3, "b")]), Window(20, 30, [(25, "a"), (26, "c")])]


def test_keyed_sliding_windows_with_lateness():
    events = [(1, "u"), (1, "v"), (6, "u"), (2, "v"), (20, "u")]
    out = (
        pl.source(events)
        | pl.window(seconds=4, step=2, key=lambda e: e[1], timestamp=ts, lateness=3)
        | pl.map(lambda kw: (kw[0], kw[1].start, kw[1].update, len(kw[1].records)))
    ).run()
    # 6 moves the watermark to 6: the windows ending at 2 and 4 fire; those ending at 2 are
    # purged (2 + 3 <= 6), those ending at 4 kept until 7. v's 2 then updates v's [0,4) and
    # opens v's [2,6), which the watermark already passed: it fires on arrival.
    assert out == [
        ("u", -2, 0, 1), ("v", -2, 0, 1), ("u", 0, 0, 1), ("v", 0, 0, 1),
        ("v", 0, 1, 2), ("v", 2, 0, 1),
        ("u", 4, 0, 1), ("u", 6, 0, 1), ("u", 18, 0, 1), ("u", 20, 0, 1),
    ]  # fmt: skip


def _reference(events, seconds, delay, lateness):
    """Which records are too late, by the definition: all their windows purged on arrival."""
    late, top = [], -math.inf
    for t, v in events:
        start = math.floor(t / seconds) * seconds
        if start + seconds + lateness <= top - delay:
            late.append((t, v))
        top = max(top, t)
    return late


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 60), max_size=60),
    seconds=st.sampled_from([1, 5, 10]),
    delay=st.sampled_from([0, 2, 7]),
    lateness=st.sampled_from([0, 3, 10, 1000]),
    chunk=st.integers(1, 8),
)
def test_every_record_ends_in_its_window_or_the_side_output_once(times, seconds, delay, lateness, chunk):
    events = [(t, i) for i, t in enumerate(times)]
    late: list = []
    runtime = pl.EventTimeWindows(
        seconds, seconds, None, ts, delay=delay, lateness=lateness, late=late.append
    )
    out: list = []
    for i in range(0, len(events), chunk):  # any cut into chunks gives the same answer
        runtime.feed(events[i : i + chunk], out.extend)
    runtime.finish(out.extend)

    assert late == _reference(events, seconds, delay, lateness)
    assert runtime.late == len(late)
    final: dict = {}
    for w in out:
        previous = final.get(w.start)
        # updates are numbered 0, 1, 2... and each carries the window's records so far
        assert w.update == (0 if previous is None else previous.update + 1)
        assert previous is None or w.records[: len(previous.records)] == previous.records
        assert all(w.start <= t < w.end for t, _ in w.records)
        final[w.start] = w
    placed = sorted(r for w in final.values() for r in w.records)
    assert sorted(placed + late) == sorted(events)  # exactly once: in a window or set aside
    if lateness == 1000:
        assert late == []


def test_bad_lateness_arguments():
    with pytest.raises(pl.PipelineError, match="lateness"):
        pl.window(seconds=1, lateness=-1)
    with pytest.raises(pl.PipelineError, match="delay"):
        pl.window(seconds=1, delay="soon")
    with pytest.raises(pl.PipelineError, match="time windows"):
        pl.window(size=3, lateness=1)
    with pytest.raises(pl.PipelineError, match="side-output"):
        pl.window(seconds=1, late=42)


def test_micro_batch_by_count_is_batch():
    assert (pl.source(range(7)) | pl.micro_batch(3)).run() == [[0, 1, 2], [3, 4, 5], [6]]
    assert (pl.source(range(7)) | pl.batch(3)).run() == [[0, 1, 2], [3, 4, 5], [6]]


def test_micro_batch_by_time_cuts_at_interval_boundaries():
    def trickle():
        for i in itertools.count():
            time.sleep(0.01)
            yield i

    gen = (pl.source(trickle) | pl.micro_batch(seconds=0.1)).stream()
    started = time.monotonic()
    batches = [next(gen) for _ in range(3)]
    elapsed = time.monotonic() - started
    gen.close()
    assert [x for b in batches for x in b] == list(range(sum(map(len, batches))))  # nothing lost
    assert all(len(b) > 1 for b in batches)  # one per interval, not one per record
    assert elapsed < 5


def test_micro_batch_by_time_and_count_whichever_first():
    out = (pl.source(range(1000)) | pl.micro_batch(100, seconds=60)).run()
    assert [len(b) for b in out] == [100] * 10

    # an idle stream: the interval ends the batch even though it is not full
    def slow():
        yield from range(3)
        time.sleep(0.5)
        yield 3

    assert (pl.source(slow) | pl.micro_batch(100, seconds=0.1)).run() == [[0, 1, 2], [3]]


def test_bad_micro_batch_arguments():
    with pytest.raises(pl.PipelineError):
        pl.micro_batch()
    with pytest.raises(pl.PipelineError):
        pl.micro_batch(seconds=0)
    with pytest.raises(pl.PipelineError):
        pl.micro_batch(0)
