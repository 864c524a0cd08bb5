"""``python -m minipool.bench topics`` runs end to end on tiny settings, with or without Redis."""

import json
import shutil
import subprocess
import sys


def test_bench_topics_measures_minipool_and_says_how_to_get_redis(tmp_path):
    path = tmp_path / "topics.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "minipool.bench",
            "topics",
            "--records",
            "300",
            "--repeat",
            "1",
            "--rate",
            "200",
            "--seconds",
            "0.3",
            "--large",
            "3000",
            "--json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(path.read_text())["results"]
    assert results["throughput"]["minipool"] > 0 and results["throughput"]["minipool fsync=everysec"] > 0
    assert len(results["latency_ms"]["minipool"]) == 2
    assert results["large"]["records"] == 3000 and len(results["large"]["consume_per_s_by_tenth"]) == 10
    try:
        import redis  # noqa: F401

        have_redis = shutil.which("redis-server") is not None
    except ImportError:
        have_redis = False
    if have_redis:
        assert results["throughput"]["Redis Streams"] > 0
    else:
        assert "apt-get install redis-server" in results["redis"] and "apt-get install" in done.stderr
