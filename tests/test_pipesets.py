"""Pipe sets as processes: instances share a channel, register while alive, survive a kill."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from minipool.cluster.coordinator import Coordinator
from minipool.pipesets import PipeSet, load
from minipool.topics import Consumer, Producer

KEY = "pipesets-key-0123456789abcdef0123"
HERE = os.path.dirname(os.path.abspath(__file__))


def env():
    root = os.path.dirname(HERE)
    return {**os.environ, "MINIPOOL_AUTHKEY": KEY, "PYTHONPATH": os.pathsep.join([root, HERE])}


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def start(url, spec="pipeset_fixtures:squares", *extra):
    # Its log goes to a file, not a pipe nobody reads: a pipe fills at 64 KB and would stop it.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "minipool", "pipe-set", spec, "--connect", url, "--ttl", "1", *extra],
        env=env(),
        stderr=log,
    )
    process.log = log
    return process


def instances(coordinator, name="squares"):
    return [
        e
        for e in coordinator.status()["registry"]
        if e["meta"].get("kind") == "pipe-set" and e["meta"].get("pipe_set") == name
    ]


def members(coordinator, topic="numbers", group="squares"):
    try:
        report = coordinator.topics.describe(topic, group)
    except Exception:
        return 0
    return len(report[0]["groups"][0]["members"])


def collect(url, topic, count, timeout=20.0):
    """Read ``topic`` until ``count`` distinct values came (an at-least-once duplicate counts once)."""
    seen = []
    with Consumer(topic, address=url, authkey=KEY, group="check", auto_offset_reset="earliest") as c:
        deadline = time.monotonic() + timeout
        while len(set(seen)) < count and time.monotonic() < deadline:
            seen += [r.value for r in c.poll(1.0)]
    return seen


@pytest.fixture
def coordinator():
    with Coordinator(KEY.encode(), heartbeat=0.5) as coordinator:
        yield coordinator


def stop(*processes):
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log = getattr(p, "log", None)
        if log is not None:
            log.close()


def test_two_instances_share_a_channel_and_a_killed_one_loses_nothing(coordinator):
    url = coordinator.serve("tcp://127.0.0.1:0")
    victim = start(url, "pipeset_fixtures:squares", "--slowdown", "0.002", "--max-records", "20")
    survivor = start(url)
    try:
        wait_for(lambda: members(coordinator) == 2 and len(instances(coordinator)) == 2)
        with Producer(url, authkey=KEY) as producer:
            for i in range(600):
                producer.send("numbers", str(i))
        wait_for(lambda: any(e["meta"]["records"] for e in instances(coordinator)), 20)
        killed = [e for e in instances(coordinator) if str(victim.pid) in e["key"]]
        assert killed, instances(coordinator)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        values = collect(url, "squared", 599)
        import json

        got = {json.loads(v)["n"] for v in values}
        assert got == set(range(600)) - {13}  # nothing lost; 13 went to the dead letters
        dead = collect(url, "squares.dead", 1)
        letter = json.loads(dead[0])
        assert letter["pipe_set"] == "squares" and letter["record"] == 13 and "unlucky" in letter["error"]
        # The killed instance leaves the registry when its entry expires; the other stays.
        wait_for(
            lambda: (
                [e["key"] for e in instances(coordinator)]
                == [e["key"] for e in instances(coordinator) if str(survivor.pid) in e["key"]]
                and len(instances(coordinator)) == 1
            ),
            10,
        )
    finally:
        stop(victim, survivor)
    wait_for(lambda: not instances(coordinator), 10)  # a clean stop leaves at once


def test_tagged_outputs_go_to_their_channels_over_ws(coordinator):
    url = coordinator.serve("ws://127.0.0.1:0")
    process = start(url, "pipeset_fixtures:split", "--instances", "2")
    try:
        wait_for(lambda: members(coordinator, group="split") == 2)
        with Producer(url, authkey=KEY) as producer:
            for i in range(-5, 100):
                producer.send("numbers", str(i))
        even = collect(url, "even", 50)
        odd = collect(url, "odd", 50)
        assert sorted(int(v) for v in even) == list(range(0, 100, 2))
        assert sorted(int(v) for v in odd) == list(range(1, 100, 2))
    finally:
        stop(process)
    assert process.returncode == 0


def test_status_lists_pipe_set_instances(coordinator):
    from minipool.__main__ import render_status

    url = coordinator.serve("tcp://127.0.0.1:0")
    process = start(url)
    try:
        wait_for(lambda: instances(coordinator))
        text = render_status(coordinator.status())
        assert "pipe sets: 1" in text and "squares: 1 instance(s) reading numbers" in text
    finally:
        stop(process)


def test_load_names_what_is_wrong():
    with pytest.raises(ValueError, match="MODULE:NAME"):
        load("no_colon")
    with pytest.raises(ValueError, match="not a PipeSet"):
        load("os:path")
    with pytest.raises(ValueError, match="codec"):
        PipeSet("x", "y", fragment=None, codec="pickle")  # type: ignore[arg-type]


def test_serve_from_python_starts_instance_processes(coordinator):
    import json

    from minipool.pipesets import serve

    sys.path.insert(0, HERE)
    try:
        import pipeset_fixtures
    finally:
        sys.path.remove(HERE)
    url = coordinator.serve("tcp://127.0.0.1:0")
    with serve(pipeset_fixtures.squares, url, instances=2, authkey=KEY, ttl=1) as served:
        wait_for(lambda: len(instances(coordinator)) == 2)
        with Producer(url, authkey=KEY) as producer:
            for i in range(20, 40):
                producer.send("numbers", str(i))
        got = sorted(json.loads(v)["square"] for v in collect(url, "squared", 20))
        assert got == [i * i for i in range(20, 40)]
    assert all(p.returncode == 0 for p in served.processes)


def test_an_instance_stops_promptly_on_sigterm_when_its_coordinator_is_gone():
    coordinator = Coordinator(KEY.encode(), heartbeat=0.5)
    url = coordinator.serve("tcp://127.0.0.1:0")
    process = start(url)
    try:
        wait_for(lambda: instances(coordinator))
        coordinator.close()
        time.sleep(0.3)  # the instance is now asking again for a coordinator that is gone
        process.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        process.wait(15)
        assert time.monotonic() - asked < 6  # not the minute it keeps trying while it runs
    finally:
        stop(process)
        coordinator.close()


def test_the_outflow_hands_results_to_an_iterator_or_a_callback(coordinator):
    from minipool.pipesets import outflow

    url = coordinator.serve("tcp://127.0.0.1:0")
    process = start(url)
    try:
        with Producer(url, authkey=KEY) as producer:
            for i in range(20):
                producer.send("numbers", str(i))
        results = outflow("squared", address=url, authkey=KEY, timeout=10)
        squares = sorted(r["square"] for _, r in zip(range(19), results, strict=False))
        results.close()
        assert squares == [i * i for i in range(20) if i != 13]  # 13 is a dead letter
        seen = []
        calls = outflow("squared", address=url, authkey=KEY, group="again", callback=seen.append, timeout=10)
        for _ in zip(range(19), calls, strict=False):
            pass
        calls.close()
        assert sorted(r["n"] for r in seen) == [i for i in range(20) if i != 13]
    finally:
        stop(process)


def test_the_command_fails_in_one_line(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "minipool", "pipe-set", *args],
            env=env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    nobody = run("pipeset_fixtures:squares", "--connect", "tcp://127.0.0.1:1")
    assert nobody.returncode == 1 and "no minipool coordinator answered" in nobody.stderr
    assert "Traceback" not in nobody.stderr
    missing = run("no_such_module:squares", "--connect", "tcp://127.0.0.1:1")
    assert missing.returncode == 2 and "cannot load no_such_module:squares" in missing.stderr
    none = run("pipeset_fixtures:squares", "--connect", "tcp://127.0.0.1:1", "--instances", "0")
    assert none.returncode == 2 and "--instances must be at least 1" in none.stderr
