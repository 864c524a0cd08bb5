"""Each pipeline example runs end to end as a script, exits 0 and prints what it computed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_factorial_sum_says_when_the_pipes_do_not_pay():
    out = run_example("factorial_sum.py", "400", "--pipes", "3")
    assert "sum of n! for n = 1..400" in out and "3 factorial pipes" in out
    # 400 factorials are microseconds of work each: the plain loop must win, and be said to.
    assert "the pipes do not pay at N = 400" in out and "too little work" in out


def test_factorial_sum_verdict_follows_its_timings():
    out = run_example("factorial_sum.py", "3000")
    serial = float(re.search(r"plain loop +: ([\d.]+) s", out).group(1))
    pipes = float(re.search(r"combining pipe: ([\d.]+) s", out).group(1))
    assert ("the pipes pay" in out) == (serial / pipes >= 1.15 - 0.01)  # printed rounded


@pytest.mark.parametrize("kind", ["thread", "async", "process"])
def test_annual_reports(kind):
    out = run_example("annual_reports.py", "--reports", "20", "--latency", "0.005", "--kind", kind)
    assert "20 reports, 600 paragraphs" in out
    assert "serial baseline" in out and f"pipeline ({kind}" in out


def test_annual_reports_with_a_journal_says_it_resumed_and_from_where(tmp_path):
    journal = ("--latency", "0", "--journal", str(tmp_path))
    out = run_example("annual_reports.py", "--reports", "10", *journal)
    assert "10 reports, 300 paragraphs" in out and "x the serial baseline" in out
    assert list(tmp_path.glob("pipeline.*"))
    again = run_example("annual_reports.py", "--reports", "10", *journal)
    assert "10 reports, 300 paragraphs" in again  # the statistics, restored from the journal
    assert "resumed from the journal" in again and "reports 0..9 were done by an earlier run" in again
    assert "this run processed 0 of 10" in again
    assert "x the serial baseline" not in again  # no speed-up is claimed for skipped work
    more = run_example("annual_reports.py", "--reports", "14", *journal)
    assert "14 reports, 420 paragraphs" in more and "this run processed 4 of 14" in more


def test_log_stream_windows_shows_each_window_its_own_traffic():
    out = run_example("log_stream_windows.py", "--lines", "24000")
    assert "reached 50 2 times" in out
    assert "MapReduce top 3 pages: " in out
    rows = re.findall(r"^ +(\d+) s +(\d+) +(\d+)  (.+)$", out, re.M)
    assert len(rows) == 8  # 240 s of events in 30 s windows
    assert len({top for *_, top in rows}) >= 6  # the trending page changes: rows differ
    errors = {int(start): int(n) for start, _, n, _ in rows}
    assert errors[30] > 5 * errors[0] and errors[150] > 5 * errors[120]  # the two outages show
