"""Fast pipes: instance to instance, held back while no inlet is registered, lossy on a crash."""

import collections
import json
import signal
import time

from minipool.topics import Producer
from test_pipesets import KEY, collect, coordinator, instances, members, start, stop, wait_for  # noqa: F401


def lag(c, topic="numbers", group="halves"):
    return c.topics.describe(topic, group)[0]["groups"][0]["lag"]


def inlets(c):
    return [e for e in c.status()["registry"] if "fast:halved" in e["services"]]


def test_a_fast_pipe_carries_every_record_once_without_the_centre(coordinator):  # noqa: F811
    url = coordinator.serve("tcp://127.0.0.1:0")
    producer_set = start(url, "pipeset_fixtures:halves")
    consumer_set = start(url, "pipeset_fixtures:doubled", "--instances", "2")
    try:
        wait_for(lambda: len(inlets(coordinator)) == 2 and members(coordinator, group="halves") == 1)
        with Producer(url, authkey=KEY) as producer:
            for i in range(300):
                producer.send("numbers", str(i))
        values = collect(url, "whole", 300)
        assert sorted(json.loads(v) for v in values) == list(range(300))
        # "halved" is a fast pipe: no record of it went through the centre.
        halved = coordinator.topics.describe("halved")[0]["partitions"]
        assert sum(p["end"] for p in halved) == 0
        pushed = wait_for(
            lambda: sum(e["meta"]["fast_pushed"] for e in instances(coordinator, "halves")) == 300 or None
        )
        assert pushed
    finally:
        stop(producer_set, consumer_set)


def test_with_no_inlet_the_producer_holds_and_a_crash_loses_what_the_inlet_held(coordinator):  # noqa: F811
    url = coordinator.serve("tcp://127.0.0.1:0")
    producer_set = start(url, "pipeset_fixtures:halves", "--max-records", "10")
    consumers = []
    try:
        wait_for(lambda: members(coordinator, group="halves") == 1)
        total = 300
        with Producer(url, authkey=KEY) as producer:
            for i in range(total):
                producer.send("numbers", str(i))
        # No instance of "doubled": the producing set holds its batch and acknowledges nothing.
        time.sleep(1.0)
        assert lag(coordinator) == total
        slow = start(url, "pipeset_fixtures:doubled", "--slowdown", "0.05")
        consumers.append(slow)
        wait_for(lambda: any(e["meta"]["records"] for e in instances(coordinator, "doubled")))
        slow.send_signal(signal.SIGKILL)  # its inlet held accepted, unprocessed batches
        slow.wait()
        consumers.append(start(url, "pipeset_fixtures:doubled"))
        wait_for(lambda: lag(coordinator) == 0, 30)  # every input acknowledged upstream
        time.sleep(0.5)
        values = [json.loads(v) for v in collect(url, "whole", total, timeout=3)]
        counts = collections.Counter(values)
        assert max(counts.values()) == 1  # nothing twice
        assert 0 < total - len(counts) <= 8 * 10 + 10  # lost: at most an inlet's worth and one batch
    finally:
        stop(producer_set, *consumers)


def test_a_fast_pipe_over_websocket_to_an_instance_of_a_coordinator_over_http(coordinator):  # noqa: F811
    url = coordinator.serve("http://127.0.0.1:0")
    producer_set = start(url, "pipeset_fixtures:halves")
    consumer_set = start(url, "pipeset_fixtures:doubled", "--listen", "ws://127.0.0.1:0")
    try:
        wait_for(lambda: [e["address"] for e in inlets(coordinator) if e["address"].startswith("ws://")])
        with Producer(url, authkey=KEY) as producer:
            for i in range(50):
                producer.send("numbers", str(i))
        assert sorted(json.loads(v) for v in collect(url, "whole", 50)) == list(range(50))
    finally:
        stop(producer_set, consumer_set)
