"""Each pipeline example runs end to end as a script, exits 0 and prints what it computed."""

from __future__ import annotations

import os
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


def test_factorial_sum():
    out = run_example("factorial_sum.py", "400", "--pipes", "3")
    assert "sum of n! for n = 1..400" in out and "3 factorial pipes" in out


@pytest.mark.parametrize("kind", ["thread", "async", "process"])
def test_annual_reports(kind):
    out = run_example("annual_reports.py", "--reports", "20", "--latency", "0.005", "--kind", kind)
    assert "20 reports, 600 paragraphs" in out
    assert "serial baseline" in out and f"pipeline ({kind}" in out


def test_annual_reports_with_a_journal(tmp_path):
    out = run_example("annual_reports.py", "--reports", "10", "--latency", "0", "--journal", str(tmp_path))
    assert "10 reports, 300 paragraphs" in out
    assert list(tmp_path.glob("pipeline.*"))


def test_log_stream_windows():
    out = run_example("log_stream_windows.py", "--lines", "24000")
    assert "reached 50 2 times" in out
    assert "MapReduce top 3 pages: / (" in out
