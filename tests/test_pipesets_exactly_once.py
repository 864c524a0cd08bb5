"""One step for a batch's outputs and its inputs' acknowledgement: exactly-once across pipe sets."""

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from minipool.errors import TopicError
from minipool.topics import Producer
from minipool.topics.groups import Group
from minipool.topics.records import pack_entries, unpack_chunks
from minipool.topics.segments import Segment
from minipool.topics.service import TopicService
from minipool.topics.topic import Topic
from pipeset_fixtures import square, squares
from test_pipesets import KEY, collect, coordinator, env, instances, members, start, stop, wait_for  # noqa: F401


@pytest.fixture
def service():
    service = TopicService(None)
    yield service
    service.close()


def fetch(service, member, count):
    request = {"topic": "in", "group": "g", "reset": "earliest", "max": count}
    return unpack_chunks("in", service.fetch(member, member, request))


def transact(service, records, outputs):
    acks = [[r.partition, r.offset, r.offset + 1] for r in records]
    request = {"topic": "in", "group": "g", "acks": acks, "outputs": [["out", len(outputs)]]}
    return service.transact(request, pack_entries([(None, v) for v in outputs]))


def out_values(service):
    return [
        r.value
        for r in unpack_chunks("out", service.fetch("reader", "s", {"topic": "out", "positions": [0]}))
    ]


def test_a_step_appends_and_acknowledges_together_and_a_late_duplicate_is_refused_whole(service):
    service.produce("in", [(None, b"a"), (None, b"b"), (None, b"c")])
    slow = fetch(service, "slow", 3)
    service.member_left("slow", "slow")  # its records go to the next taker
    fast = fetch(service, "fast", 3)
    assert [r.offset for r in fast] == [0, 1, 2]
    assert transact(service, fast[:2], [b"A", b"B"]) == {"done": [], "appended": 2, "full": None}
    # The slow instance finishes the same batch late: refused, nothing appended.
    assert transact(service, slow, [b"A", b"B", b"C"]) == {"done": [[0, 0, 2]], "appended": 0, "full": None}
    assert out_values(service) == [b"A", b"B"]
    assert transact(service, slow[2:], [b"C"]) == {
        "done": [],
        "appended": 1,
        "full": None,
    }  # the rest, redone
    assert out_values(service) == [b"A", b"B", b"C"]
    group = service.describe("in", "g")[0]["groups"][0]
    assert group["partitions"][0]["committed"] == 3 and group["lag"] == 0


def test_a_malformed_step_is_refused_with_a_reason(service):
    service.produce("in", [(None, b"a")])
    records = fetch(service, "m", 1)
    with pytest.raises(TopicError, match="add up"):
        service.transact(
            {"topic": "in", "group": "g", "acks": [[0, 0, 1]], "outputs": [["out", 2]]},
            pack_entries([(None, b"x")]),
        )
    with pytest.raises(TopicError, match="no group"):
        service.transact({"topic": "in", "group": "nope", "acks": [], "outputs": []}, b"")
    assert transact(service, records, [b"x"])["appended"] == 1  # nothing was half done


class Killed(BaseException):
    """The coordinator dies here: nothing after this point of the step runs."""


def values(service, topic):
    report = service.topic(topic).bounds()
    return [
        r.value
        for r in unpack_chunks(
            topic, service.fetch("reader", "s", {"topic": topic, "positions": [0] * len(report)})
        )
    ]


def two_channel_step(service, records, tag):
    """A step with outputs on two channels: ``out`` gets one per input, ``log`` one in all."""
    acks = [[r.partition, r.offset, r.offset + 1] for r in records]
    outs = [r.value.upper() for r in records]
    request = {"topic": "in", "group": "g", "acks": acks, "outputs": [["out", len(outs)], ["log", 1]]}
    return service.transact(request, pack_entries([(None, v) for v in [*outs, tag]]))


def kill_at(m, point):
    if point == "before the outputs":
        m.setattr(Topic, "write", lambda *a: (_ for _ in ()).throw(Killed()))
    elif point == "in the middle of a record":

        def torn(self, data, first, count, newest):
            os.write(self.fd, data[: len(data) // 2 + 3])
            raise Killed

        m.setattr(Segment, "append", torn)
    elif point == "between two channels":
        write, calls = Topic.write, []

        def once(self, *args):
            if calls:
                raise Killed
            calls.append(self.name)
            return write(self, *args)

        m.setattr(Topic, "write", once)
    else:  # after the outputs, before the reply
        m.setattr(Group, "ack", lambda *a: (_ for _ in ()).throw(Killed()))


@pytest.mark.parametrize(
    "point", ["before the outputs", "in the middle of a record", "between two channels", "after the outputs"]
)
def test_a_coordinator_killed_inside_a_step_completes_or_discards_it_whole(tmp_path, point):
    service = TopicService(tmp_path, fsync="no")
    service.produce("in", [(None, v) for v in (b"a", b"b", b"c", b"d")])
    assert two_channel_step(service, fetch(service, "m", 2), b"a-b")["appended"] == 3
    batch = fetch(service, "m", 2)
    with pytest.MonkeyPatch.context() as m:
        kill_at(m, point)
        with pytest.raises(Killed):
            two_channel_step(service, batch, b"c-d")
    service.close()  # the files as the kill left them
    service = TopicService(tmp_path, fsync="no")
    try:
        done = point == "after the outputs"
        assert values(service, "out") == ([b"A", b"B", b"C", b"D"] if done else [b"A", b"B"])
        assert values(service, "log") == ([b"a-b", b"c-d"] if done else [b"a-b"])
        assert service.positions.discarded == (0 if done else 1)
        # The instance sends the step again once it has reconnected: recognised, not applied.
        assert two_channel_step(service, batch, b"c-d") == {"done": [[0, 2, 4]], "appended": 0, "full": None}
        if not done:  # the inputs are handed out again, and their outputs made once
            again = fetch(service, "m2", 10)
            assert [r.value for r in again] == [b"c", b"d"]
            assert two_channel_step(service, again, b"c-d")["appended"] == 3
        assert values(service, "out") == [b"A", b"B", b"C", b"D"]
        assert values(service, "log") == [b"a-b", b"c-d"]
        service.close()
        service = TopicService(tmp_path, fsync="no")  # and a later restart keeps it so
        assert values(service, "out") == [b"A", b"B", b"C", b"D"]
        assert service.describe("in", "g")[0]["groups"][0]["partitions"][0]["committed"] == 4
    finally:
        service.close()


@pytest.mark.parametrize("backed_up", [False, True])
def test_inputs_acknowledged_out_of_order_are_not_handed_out_again_after_a_restart(tmp_path, backed_up):
    service = TopicService(tmp_path, fsync="no")
    service.produce("in", [(None, v) for v in (b"a", b"b", b"c", b"d", b"e")])
    held = fetch(service, "m", 5)
    assert transact(service, held[2:4], [b"C", b"D"])["appended"] == 2  # above a gap: 0 and 1 pending
    if backed_up:
        assert service.backup()
    service.close()
    service = TopicService(tmp_path, fsync="no")
    try:
        again = fetch(service, "m2", 10)
        assert [r.value for r in again] == [b"a", b"b", b"e"]  # c and d were done
        assert transact(service, held[2:4], [b"C", b"D"])["done"] == [[0, 2, 4]]
        assert transact(service, again, [b"A", b"B", b"E"])["appended"] == 3
        assert sorted(out_values(service)) == [b"A", b"B", b"C", b"D", b"E"]
        assert service.describe("in", "g")[0]["groups"][0]["partitions"][0]["committed"] == 5
    finally:
        service.close()


def test_a_step_whose_write_fails_is_refused_whole_and_stays_so_after_a_restart(tmp_path):
    service = TopicService(tmp_path, fsync="no")
    service.produce("in", [(None, b"a"), (None, b"b")])
    batch = fetch(service, "m", 2)
    with pytest.MonkeyPatch.context() as m:

        def disk_full(self, data, first, count, newest):
            os.write(self.fd, data[:5])
            raise OSError(28, "No space left on device")

        m.setattr(Segment, "append", disk_full)
        with pytest.raises(OSError):
            two_channel_step(service, batch, b"a-b")
    assert values(service, "out") == [] and values(service, "log") == []
    assert two_channel_step(service, batch, b"a-b")["appended"] == 3  # the retry, once
    service.produce("out", [(None, b"later")])  # fills the offsets the failed step had
    service.close()
    service = TopicService(tmp_path, fsync="no")
    try:
        assert values(service, "out") == [b"A", b"B", b"later"]
        assert service.describe("in", "g")[0]["groups"][0]["partitions"][0]["committed"] == 2
    finally:
        service.close()


def test_an_instance_killed_mid_run_loses_and_duplicates_nothing(coordinator):  # noqa: F811
    url = coordinator.serve("tcp://127.0.0.1:0")
    victim = start(url, "pipeset_fixtures:squares", "--slowdown", "0.003", "--max-records", "25")
    survivor = start(url, "pipeset_fixtures:squares", "--max-records", "25")
    try:
        wait_for(lambda: members(coordinator) == 2)
        total = 1000
        with Producer(url, authkey=KEY) as producer:
            for i in range(total):
                producer.send("numbers", str(i))
        wait_for(
            lambda: any(e["meta"]["records"] for e in instances(coordinator) if str(victim.pid) in e["key"])
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        values = collect(url, "squared", total - 1)
        counts = collections.Counter(json.loads(v)["n"] for v in values)
        assert set(counts) == set(range(total)) - {13}  # nothing lost (13 is a dead letter)
        assert max(counts.values()) == 1  # nothing twice
        wait_for(lambda: coordinator.topics.describe("numbers", "squares")[0]["groups"][0]["lag"] == 0)
        # Every step is done, and a step appends its dead letters with its outputs: the dead
        # letter channel holds all it ever will, one record.
        dead = coordinator.topics.describe("squares.dead")[0]["partitions"]
        assert sum(p["end"] for p in dead) == 1
        assert len(collect(url, "squares.dead", 1)) == 1
    finally:
        stop(victim, survivor)


def centre_process(url, journal):
    """A coordinator process with a journal, once it listens."""
    argv = [sys.executable, "-m", "minipool", "coordinator", "--bind", url, "--journal", str(journal)]
    process = subprocess.Popen(argv + ["--heartbeat", "0.5"], env=env(), stdout=subprocess.PIPE, text=True)
    while "listening on" not in (line := process.stdout.readline()):
        assert line, "the coordinator did not start"

    def drain():  # until the process ends, then let the pipe go
        with process.stdout:
            process.stdout.read()

    threading.Thread(target=drain, daemon=True).start()
    return process


def test_a_coordinator_killed_mid_run_with_its_journal_loses_nothing(tmp_path):
    from minipool.topics.connection import connect, request
    from minipool.wire import Kind

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    centre = centre_process(url, tmp_path)
    sets = [start(url, "pipeset_fixtures:squares", "--max-records", "20") for _ in range(2)]
    client = connect(url, None, KEY, 60.0, {})

    def produced(topic):
        try:
            report = request(client, Kind.TOPIC_ADMIN, {"op": "describe", "topic": topic}, 5.0)
        except Exception:
            return 0
        return sum(p["end"] for p in report[0]["partitions"])

    try:
        wait_for(lambda: len(client.lookup("squares")) == 2)
        total = 3000
        with Producer(url, authkey=KEY) as producer:  # all acknowledged before the first kill
            for i in range(total):
                producer.send("numbers", str(i))
        for made in (200, 1200, 2200):  # killed three times, at whatever point each step is
            wait_for(lambda: produced("squared") > made)  # noqa: B023 - used at once
            centre.send_signal(signal.SIGKILL)
            centre.wait()
            centre = centre_process(url, tmp_path)
        values = collect(url, "squared", total - 1, timeout=60)
        counts = collections.Counter(json.loads(v)["n"] for v in values)
        assert set(counts) == set(range(total)) - {13}  # nothing lost
        assert len(values) == len(counts)  # nothing twice
        uninterrupted = [squares.encode(square(n)) for n in range(total) if n != 13]
        assert sorted(values) == sorted(uninterrupted)  # the very records of a run not killed
        assert wait_for(lambda: produced("numbers")) == total  # and no input resent by the producer
    finally:
        client.close()
        stop(*sets)
        centre.kill()
        centre.wait()
