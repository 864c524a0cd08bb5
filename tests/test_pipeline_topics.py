"""Pipelines on topics hosted by a real coordinator: the source and the sink, and a pipeline
SIGKILLed between checkpoints whose rerun gives output identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from minipool import Pool
from minipool import pipeline as pl
from minipool.topics import Consumer, Producer

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from minipool import pipeline as pl

    address, group, out, journal = sys.argv[1:5]
    paced = sys.argv[5:] == ["paced"]

    def slow(record):
        if paced:  # the run to kill lasts long enough for the kill to land mid-stream
            time.sleep(0.0005)
        return json.loads(record.value)

    p = (pl.from_topic("events", group=group, address=address, idle_timeout=0.7)
         | pl.map(slow)
         | pl.window(seconds=1, key=lambda e: e["k"], timestamp=lambda e: e["t"], lateness=0.5)
         | pl.map(lambda kw: [kw[0], kw[1].start, kw[1].update, len(kw[1].records)]))
    if out == "-":  # the terminal value
        print(json.dumps(p.run(journal=journal)))
    else:
        print(json.dumps((p | pl.to_topic(out, address=address)).run(journal=journal)))
""")


@pytest.fixture
def coordinator():
    key = secrets.token_hex(16)
    with Pool(1, kind="thread", authkey=key) as pool:
        yield pool, key


def test_a_topic_in_a_topic_out(coordinator):
    pool, _ = coordinator
    with Producer(pool=pool) as producer:
        for i in range(500):
            producer.send("numbers", str(i), key=str(i % 4))
        producer.flush()
    p = pl.from_topic("numbers", group="g", pool=pool, idle_timeout=0.3) | pl.map(lambda r: int(r.value) * 2)
    assert (p | pl.to_topic("doubled", pool=pool, value=str)).run() == 500
    with Consumer("doubled", pool=pool, auto_offset_reset="earliest") as out:
        values = [int(r.value) for r in out.poll(timeout=1.0)]
    assert sorted(values) == [2 * i for i in range(500)]
    assert (p | pl.count()).run() == 0  # the group committed: nothing is left for it


def _end(pool, topic: str) -> int:
    with Consumer(topic, pool=pool, auto_offset_reset="latest") as reader:
        return sum(reader.positions())


def _values(pool, topic: str) -> list[bytes]:
    """Every record ``topic`` holds (the writers have ended: its end is final)."""
    out: list[bytes] = []
    end = _end(pool, topic)
    with Consumer(topic, pool=pool, auto_offset_reset="earliest") as reader:
        deadline = time.monotonic() + 30
        while len(out) < end and time.monotonic() < deadline:
            out.extend(r.value for r in reader.poll(timeout=1.0))
    assert len(out) == end, f"read {len(out)} of the {end} records of {topic!r}"
    return out


@pytest.mark.parametrize("output", ["topic", "value"])
def test_sigkill_between_checkpoints_then_rerun_gives_identical_output(coordinator, tmp_path, output):
    pool, key = coordinator
    with Producer(pool=pool) as producer:  # 4 s of event time, 3 keys, a few records late
        for i in range(2000):
            t = i / 500 - (0.8 if i % 97 == 0 else 0)
            producer.send("events", json.dumps({"t": t, "k": i % 3}))
        producer.flush()
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "MINIPOOL_AUTHKEY": key}

    def start(group: str, out: str, journal: str, *paced: str) -> subprocess.Popen:
        args = [sys.executable, str(script), pool.address, group, out, journal, *paced]
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)

    def finish(proc: subprocess.Popen) -> object:
        stdout, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        return json.loads(stdout)

    reference = finish(start("reference", "-" if output == "value" else "reference", str(tmp_path / "ref")))
    journal = tmp_path / "journal"
    out = "-" if output == "value" else "out"
    victim = start("g", out, str(journal), "paced")
    try:
        deadline = time.monotonic() + 30
        # killed after checkpoints carried the windows' state, and (topic) results were written
        while time.monotonic() < deadline and victim.poll() is None:
            logged = sum(f.stat().st_size for f in journal.glob("pipeline.*.log"))
            if logged > 2000 and (output == "value" or _end(pool, "out") >= 5):
                break
            time.sleep(0.01)
        assert victim.poll() is None, "the pipeline finished before it could be killed"
        os.killpg(victim.pid, signal.SIGKILL)
    finally:
        victim.communicate(timeout=10)
    resumed = finish(start("g", out, str(journal)))
    if output == "value":
        assert resumed == reference  # every window result, once, in the same order
    else:
        assert resumed == reference  # how many results the pipeline wrote in all
        assert _values(pool, "out") == _values(pool, "reference")
