"""The topic commands: produce lines from stdin, consume them, list, create and describe."""

import json
import os
import subprocess
import sys

import pytest

from minipool.cluster.coordinator import Coordinator

KEY = "topics-cli-key-0123456789abcdef0123"


def run(*args, stdin="", timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "minipool", *args],
        env={**os.environ, "MINIPOOL_AUTHKEY": KEY},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def url():
    with Coordinator(KEY.encode()) as coordinator:
        yield coordinator.serve("tcp://127.0.0.1:0")


def test_produce_then_consume_from_the_beginning_and_as_a_group(url):
    done = run("produce", "lines", "--url", url, stdin="first\nsecond\nthird\n")
    assert done.returncode == 0, done.stderr
    assert "3 record(s)" in done.stderr
    done = run("consume", "lines", "--url", url, "--from-beginning", "--idle", "0.3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["first", "second", "third"]
    done = run("consume", "lines", "--url", url, "--group", "g", "--from-beginning", "--max", "2")
    assert done.stdout.splitlines() == ["first", "second"]
    done = run("consume", "lines", "--url", url, "--group", "g", "--idle", "0.3")
    assert done.stdout.splitlines() == ["third"]  # the group's position was kept
    described = json.loads(run("topics", "describe", "lines", "--url", url, "--json").stdout)
    (group,) = described[0]["groups"]
    assert group["name"] == "g" and group["partitions"][0]["committed"] == 3 and group["lag"] == 0
    text = run("topics", "describe", "--url", url).stdout
    assert "partition 0: offsets 0..3" in text and "group g: lag 0" in text


def test_create_and_list(url):
    done = run("topics", "create", "wide", "--partitions", "3", "--url", url)
    assert done.returncode == 0, done.stderr
    assert "3 partition(s)" in done.stdout
    assert "wide" in run("topics", "list", "--url", url).stdout.split()


@pytest.mark.parametrize(
    "args, message",
    [
        (("topics", "describe", "nothing-here"), "no topic 'nothing-here'"),
        (("topics", "describe", "lines", "--group", "ghost"), "no group 'ghost'"),
        (("topics", "create", "bad name!"), "not a topic name"),
        (("consume", "bad/name"), "not a topic name"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_1(url, args, message):
    run("produce", "lines", "--url", url, stdin="x\n")
    done = run(*args, "--url", url, "--idle", "0.2") if args[0] == "consume" else run(*args, "--url", url)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
