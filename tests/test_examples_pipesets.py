"""The annual-report example's distributed mode runs its three pipe sets and matches the serial run."""

import os
import subprocess
import sys
from pathlib import Path

from test_examples_pipeline import run_example

ROOT = Path(__file__).resolve().parents[1]


def test_annual_reports_distributed_matches_the_serial_run():
    args = ["--reports", "10", "--latency", "0", "--distributed", "--instances", "2"]
    assert "identical statistics to the serial run" in run_example("annual_reports.py", *args)


def test_annual_reports_refuses_distributed_options_without_distributed():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "annual_reports.py"), "--instances", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 2 and "go with --distributed" in out.stderr
