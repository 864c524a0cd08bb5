"""Durable channels: journal replay, SIGKILL mid-run, corrupt journals."""

from __future__ import annotations

import json
import logging
import operator
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from minipool import pipeline as pl

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from minipool import pipeline as pl

    processed = 0
    journal = sys.argv[1] if len(sys.argv) > 1 else None
    paced = sys.argv[2:] == ["paced"]

    def work(x):
        global processed
        processed += 1
        if paced:  # the run to kill lasts long enough for the kill to land mid-run
            time.sleep(0.0005)
        return x * 7

    if __name__ == "__main__":
        p = (pl.source(range(3000)) | pl.map(work) | pl.filter(lambda y: y % 3 != 0)
             | pl.batch(1) | pl.map(lambda b: b[0]) | pl.collect())
        result = p.run(journal=journal, snapshot_every=3)
        print(json.dumps({"result": result, "processed": processed}))
""")


def _run(script: Path, *args: str, timeout: float = 60) -> dict:
    out = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _kill_when(script: Path, journal: Path, ready) -> None:
    """Run ``script`` with ``journal`` and SIGKILL it once ``ready(journal)`` is true."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(journal), "paced"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None and not ready(journal):
            time.sleep(0.01)
        assert proc.poll() is None, "the pipeline finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
        proc.stderr.close()


def test_sigkill_mid_run_then_rerun_loses_nothing_and_duplicates_nothing(tmp_path):
    script = tmp_path / "durable.py"
    script.write_text(SCRIPT)
    expected = _run(script)["result"]
    assert len(expected) == 2000

    journal = tmp_path / "journal"

    def snapshot_and_more(journal: Path) -> bool:  # a snapshot, and records logged after it
        logs = sorted(journal.glob("pipeline.*.log"))
        return bool(list(journal.glob("pipeline.*.snap"))) and bool(logs) and logs[-1].stat().st_size > 200

    _kill_when(script, journal, snapshot_and_more)
    resumed = _run(script, str(journal))
    assert resumed["result"] == expected  # none lost, none duplicated, same order
    assert 0 < resumed["processed"] < 3000  # it resumed rather than starting over
    again = _run(script, str(journal))  # a finished journal gives the same answer again
    assert again["result"] == expected and again["processed"] == 0


WINDOWED = textwrap.dedent("""
    import json, sys, time
    from minipool import pipeline as pl

    processed = 0
    journal = sys.argv[1] if len(sys.argv) > 1 else None
    paced = sys.argv[2:] == ["paced"]

    def work(x):
        global processed
        processed += 1
        if paced:  # the run to kill lasts long enough for the kill to land mid-run
            time.sleep(0.0005)
        return x

    if __name__ == "__main__":
        # keyed 1-second windows of event time that always hold records: only a barrier that
        # carries their state lets a checkpoint pass them
        p = (pl.source(range(3000)) | pl.map(work)
             | pl.window(seconds=1, key=lambda x: x % 3, timestamp=lambda x: x / 400, lateness=0.5)
             | pl.map(lambda kw: (kw[0], kw[1].start, kw[1].update, sum(kw[1].records)))
             | pl.collect())
        result = p.run(journal=journal, snapshot_every=3)
        print(json.dumps({"result": result, "processed": processed}))
""")


def test_sigkill_with_stages_that_always_hold_records_resumes_from_their_checkpointed_state(tmp_path):
    script = tmp_path / "windowed.py"
    script.write_text(WINDOWED)
    expected = _run(script)["result"]
    assert len(expected) == 24  # 8 seconds of event time, 3 keys
    journal = tmp_path / "journal"
    # a commit that carries the windows' state (a barrier) is in the log: kill then
    _kill_when(script, journal, lambda j: any(f.stat().st_size > 2000 for f in j.glob("pipeline.*.log")))
    resumed = _run(script, str(journal))
    assert resumed["result"] == expected
    assert 0 < resumed["processed"] < 3000  # restored the windows' state instead of starting over


def test_rerun_with_finished_journal_skips_everything(tmp_path):
    pulled = []

    def numbers():
        for i in range(1000):
            pulled.append(i)
            yield i

    p = pl.source(numbers) | pl.map(lambda x: x + 1) | pl.reduce(operator.add)
    assert p.run(journal=str(tmp_path)) == sum(range(1, 1001))
    pulled.clear()
    with p.start(journal=str(tmp_path)) as run:
        assert run.result() == sum(range(1, 1001))
        assert run.stats()[0].records_out == 0  # the source skipped every journaled record
    assert run.journal_damage is None


def test_truncated_journal_replays_valid_prefix_and_reports_damage(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="minipool.pipeline")
    p = pl.source(range(5000)) | pl.map(lambda x: x % 97) | pl.collect()
    expected = p.run()
    assert p.run(journal=str(tmp_path), snapshot_every=10_000) == expected
    (log_file,) = tmp_path.glob("pipeline.*.log")
    size = log_file.stat().st_size
    with open(log_file, "r+b") as f:
        f.truncate(size - 7)  # tear the last record in half
    with p.start(journal=str(tmp_path), snapshot_every=10_000) as run:
        assert run.result() == expected
    assert run.journal_damage
    assert "damaged" in caplog.text


def test_garbage_journal_is_reported_not_invented(tmp_path):
    p = pl.source(range(300)) | pl.count()
    assert p.run(journal=str(tmp_path)) == 300
    (log_file,) = tmp_path.glob("pipeline.*.log")
    data = bytearray(log_file.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last record's payload
    log_file.write_bytes(bytes(data))
    with p.start(journal=str(tmp_path)) as run:
        assert run.result() == 300
    assert run.journal_damage


def test_a_journal_in_the_older_format_is_refused_with_a_clear_error(tmp_path):
    import pickle

    from minipool.journal import Journal

    with Journal(str(tmp_path), name="pipeline") as journal:
        journal.append(pickle.dumps((3, [1, 2, 3])))  # (seq, records): no position, no states
    with pytest.raises(pl.PipelineError, match="older minipool"):
        (pl.source(range(10)) | pl.count()).run(journal=str(tmp_path))


def test_journal_rejects_pipelines_it_cannot_make_durable(tmp_path):
    with pytest.raises(pl.PipelineError, match="linear"):
        (pl.merge(pl.source([1]), pl.source([2])) | pl.count()).run(journal=str(tmp_path))
    with pytest.raises(pl.PipelineError, match="linear"):
        (pl.source([1]) | pl.service("s", abs) | pl.count()).run(journal=str(tmp_path))
    with pytest.raises(pl.PipelineError, match="fsync"):
        (pl.source([1]) | pl.count()).run(journal=str(tmp_path), fsync="sometimes")
