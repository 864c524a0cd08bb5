"""The seed examples on the pool and transports run end to end as scripts, exit 0 and print
what they computed (each checks itself against a serial computation before exiting 0)."""

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
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out.stdout


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_websocket_pipeline(kind):
    out = run_example("websocket_pipeline.py", "--lines", "3000", "--block", "100", "--kind", kind)
    assert "receiver at ws://127.0.0.1:" in out and "30 messages" in out
    assert f"(mapper: {kind})" in out
    assert "top words: the (" in out
    assert 'the sender got back: [["the", ' in out
    assert "matches the serial count: yes" in out


def test_monte_carlo_pi():
    out = run_example("monte_carlo_pi.py", "--quick")
    assert "Pool(1).map" in out and "Pool(2).map" in out and "Pool.map_reduce" in out
    assert "pi = 3.1" in out
    assert "every pool's count matches the serial count: yes" in out
    # The verdict follows the speed-ups printed above it (serial and pool timed in turns).
    best = max(float(x) for x in re.findall(r"Pool\(\d\)\.map .* speed-up +([\d.]+)x", out))
    if best >= 1.15:
        assert f"the pool pays: {best:.2f}x" in out
    else:
        assert "the pools did not pay here" in out


def test_distributed_sum():
    out = run_example("distributed_sum.py", "200000", "--chunks", "4")
    assert re.search(r"serial sum of the chunks    : 19999900000  [\d.]+ s", out)
    assert "chunksize=50,000" in out  # the chunksize the docstring promises is the one used
    assert "shipping the chunks to the workers cost more than adding them" in out
    assert "multiprocessing.Pool.map    : 19999900000" in out
    assert "minipool.Pool.map           : 19999900000" in out
    assert "all sums equal the closed form: yes" in out


def test_celery_style():
    out = run_example("celery_style.py")
    assert "my_task.delay(5, 7): id " in out and ".get() -> 12, state SUCCESS" in out
    assert "kwargs={'scale': 10}) -> 50" in out
    assert "flaky task with retries=3: succeeded on attempt 3" in out
    assert "get() raised ZeroDivisionError" in out
    assert "schedule(heartbeat, every=0.2)" in out
    assert "all Celery-style calls behaved as expected: yes" in out


def test_microservices():
    out = run_example("microservices.py")
    assert "registry: users at http://127.0.0.1:" in out
    assert "POST /users    -> {'id': 3, 'name': 'Carol'}" in out
    assert "on 2 compute workers found in the registry" in out
    assert "'Service Discovery'" in out and "by Carol" in out
    assert "matches a serial run: yes" in out


def test_remote_cluster():
    out = run_example("remote_cluster.py")
    assert "coordinator (pid " in out and "at tcp://127.0.0.1:" in out
    assert "longest is n=2919, 216 steps" in out
    assert "a lambda ran remotely: LAMBDAS TRAVEL TOO!" in out
    assert "status: 2 workers" in out
    assert "stopped 3 processes, exit codes [0, 0, 0]" in out


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_remote_objects(transport):
    out = run_example("remote_objects.py", "--name", "LiLei", "--transport", transport)
    assert "client: Hi welcome LiLei" in out
    assert "3 forwarding the message to the object 1" in out and "the chain is closed!" in out
    assert "Result=['passed on from 1', 'passed on from 2', 'passed on from 3', 'complete at 1']" in out
    assert "matches the seed's output: yes" in out
