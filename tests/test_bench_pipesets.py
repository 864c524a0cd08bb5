"""``python -m minipool.bench pipesets`` runs end to end on a small job and reports every row."""

import json
import os
import subprocess
import sys


def test_bench_pipesets_small(tmp_path):
    path = tmp_path / "pipesets.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "minipool.bench", "pipesets", "--reports", "20", "--paragraphs", "5"]
        + ["--work", "0", "--repeat", "1", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": root},
        check=True,
    ).stdout
    assert "fast pipe, 2 classify" in out and "one process" in out
    results = json.loads(path.read_text())["results"]
    assert set(results["configurations"]) == {
        "exchange channel, 1 classify",
        "exchange channel, 2 classify",
        "fast pipe, 1 classify",
        "fast pipe, 2 classify",
    }
    for measured in results["configurations"].values():
        assert measured["rate"] > 0 and measured["resend_rate"] == 0
    # one classify instance SIGKILLed a third of the way: every label once, taken over quickly
    assert [run["labels"] for run in results["killed"]["runs"]] == [100]
    assert results["killed"]["recovered_s"] < 10
