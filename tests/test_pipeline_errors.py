"""Failures: stage and source errors name their stage, policies, and clean shutdown."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from minipool import pipeline as pl
from minipool.pipeline import ErrorPolicy, StageFailed


def boom_on_3(x):
    if x == 3:
        raise ZeroDivisionError("three")
    return x


def test_stage_error_names_stage_and_record_and_stops_cleanly():
    before = threading.active_count()
    with pytest.raises(StageFailed, match=r"stage 'divide' failed on record 3: ZeroDivisionError") as info:
        (pl.source(range(10)) | pl.map(boom_on_3, name="divide") | pl.map(str)).run()
    assert info.value.stage == "divide" and info.value.record == 3
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert threading.active_count() == before


@pytest.mark.parametrize("options", [dict(kind="thread", workers=3), dict(kind="process", workers=2)])
def test_parallel_stage_error_is_reported(options):
    with pytest.raises(StageFailed, match="'divide'.*three"):
        (pl.source(range(100)) | pl.map(boom_on_3, name="divide", **options)).run()


def test_async_stage_error_is_reported():
    async def bad(x):
        raise ValueError(f"bad {x}")

    with pytest.raises(StageFailed, match="'fetch'.*bad 0"):
        (pl.source(range(3)) | pl.map(bad, kind="async", name="fetch")).run()


def test_source_raising_mid_stream_names_the_source():
    def broken():
        yield 1
        yield 2
        raise OSError("disk gone")

    with pytest.raises(StageFailed, match="'logs'.*disk gone"):
        (pl.source(broken, name="logs") | pl.map(str)).run()


def test_error_in_endless_stream_does_not_hang():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    with pytest.raises(StageFailed, match="'slow'"):
        (pl.source(endless) | pl.map(lambda x: 1 / (x - 5000), name="slow")).run()


def test_process_stage_failure_leaves_no_worker_processes():
    pids = set()
    lock = threading.Lock()

    def remember(pid):
        with lock:
            pids.add(pid)
        return pid

    with pytest.raises(StageFailed):
        (
            pl.source(range(200))
            | pl.map(lambda x: os.getpid() if x < 150 else 1 / 0, kind="process", workers=2, chunksize=5)
            | pl.map(remember)
        ).run()
    assert pids
    deadline = time.monotonic() + 10
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive.discard(pid)
        time.sleep(0.05)
    assert not alive


def test_skip_policy_counts_and_goes_on(caplog):
    caplog.set_level(logging.WARNING, logger="minipool.pipeline")
    with (pl.source(range(6)) | pl.map(boom_on_3, errors="skip", name="d")).start() as run:
        assert run.result() == [0, 1, 2, 4, 5]
        assert {s.name: s for s in run.stats()}["d"].errors == 1
    assert "skipped a record" in caplog.text


def test_dead_letter_policy_keeps_record_and_error():
    with (pl.source(range(6)) | pl.map(boom_on_3, errors="dead_letter", name="d")).start() as run:
        assert run.result() == [0, 1, 2, 4, 5]
    (letter,) = run.dead_letters
    assert letter.stage == "d" and letter.record == 3 and isinstance(letter.error, ZeroDivisionError)
    assert ErrorPolicy("dead_letter") is ErrorPolicy.DEAD_LETTER


def test_retry_policy_retries_flaky_records():
    attempts: dict[int, int] = {}

    def flaky(x):
        attempts[x] = attempts.get(x, 0) + 1
        if attempts[x] < 3:
            raise ConnectionError("try again")
        return x

    assert (pl.source(range(4)) | pl.map(flaky, retries=2)).run() == [0, 1, 2, 3]
    attempts.clear()
    with pytest.raises(StageFailed, match="try again"):
        (pl.source(range(4)) | pl.map(flaky, retries=1)).run()


def test_failure_does_not_wait_forever_on_a_silent_source():
    release = threading.Event()

    def silent():
        yield 1
        release.wait(30)  # a source stuck in a read that never returns
        yield 2

    try:
        with pytest.raises(StageFailed, match="'check'"):
            (pl.source(silent) | pl.map(lambda x: 1 / 0, name="check")).run()
    finally:
        release.set()
