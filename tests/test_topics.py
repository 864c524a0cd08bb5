"""Producers and consumers against a live coordinator: every transport, the embedded pool,
consumer groups, replay, and bad input that fails only itself."""

import concurrent.futures
import itertools
import threading
import time

import pytest

from conftest import TLS_TRANSPORTS, TRANSPORTS
from minipool import Pool
from minipool.cluster.coordinator import Coordinator
from minipool.errors import MessageTooLarge, TopicError
from minipool.topics import Consumer, Producer

KEY = b"topics-test-key-" * 2


@pytest.fixture(params=TRANSPORTS + TLS_TRANSPORTS)
def served(request, tmp_path_factory):
    """A coordinator on one transport, and the options a client needs to reach it."""
    server, client = {}, {}
    if request.param in TLS_TRANSPORTS:
        from minipool.tls import server_context
        from tlsutil import make_tls

        tls = make_tls(tmp_path_factory.mktemp("tls"))
        directory = tls.ca_file.parent
        server = {"ssl_context": server_context(directory / "server.pem", directory / "server.key")}
        client = {"cafile": str(tls.ca_file)}
    coordinator = Coordinator(KEY, **server)
    url = coordinator.serve(f"{request.param}://127.0.0.1:0")
    yield coordinator, url, client
    coordinator.close()


def test_records_go_round_trip_over_every_transport(served):
    coordinator, url, options = served
    with Producer(url, authkey=KEY, **options) as producer:
        futures = [producer.send("logs", b"line %d" % i, key=b"user-1") for i in range(300)]
        producer.flush()
    assert [f.result().offset for f in futures] == list(range(300))
    with Consumer(
        "logs", address=url, authkey=KEY, group="stats", auto_offset_reset="earliest", timeout=0.5, **options
    ) as consumer:
        records = list(itertools.islice(consumer, 300))
        assert consumer.poll(0) == []  # and nothing more to read (its end is checked below too)
    assert [r.value for r in records] == [b"line %d" % i for i in range(300)]
    assert {(r.topic, r.partition, r.key) for r in records} == {("logs", 0, b"user-1")}
    assert all(abs(r.timestamp - time.time()) < 60 for r in records)
    (entry,) = coordinator.topics.describe("logs")
    assert entry["groups"][0]["partitions"][0]["committed"] == 300 and entry["groups"][0]["lag"] == 0


def test_the_key_comes_from_minipool_authkey(monkeypatch):
    with Coordinator(KEY) as coordinator:
        url = coordinator.serve("tcp://127.0.0.1:0")
        monkeypatch.setenv("MINIPOOL_AUTHKEY", KEY.decode())
        with Producer(url) as producer:
            assert producer.send("t", "text is UTF-8").result(10).offset == 0
        monkeypatch.delenv("MINIPOOL_AUTHKEY")
        with pytest.raises(ValueError, match="MINIPOOL_AUTHKEY"):
            Producer(url)


def test_an_embedded_pool_hosts_topics():
    with Pool(1, kind="thread") as pool:
        with Producer(pool=pool) as producer:
            producer.send("t", b"a").result(10)
            producer.send("t", b"b").result(10)
        with Consumer("t", pool=pool, auto_offset_reset="earliest", timeout=0.3) as consumer:
            assert [r.value for r in consumer] == [b"a", b"b"]
        assert pool.status()["topics"][0]["partitions"][0]["end"] == 2


@pytest.fixture
def coordinator_url():
    with Coordinator(KEY, heartbeat=0.25) as coordinator:
        yield coordinator, coordinator.serve("tcp://127.0.0.1:0")


def test_a_group_gives_each_record_to_one_member(coordinator_url):
    coordinator, url = coordinator_url
    coordinator.topics.admin("x", None, {"op": "create", "topic": "work", "config": {"partitions": 4}})
    consumers = [
        Consumer("work", address=url, authkey=KEY, group="g", auto_offset_reset="earliest", timeout=1.0)
        for _ in range(3)
    ]
    seen: list[list] = [[] for _ in consumers]
    with Producer(url, authkey=KEY) as producer:
        for i in range(400):
            producer.send("work", b"%d" % i, key=b"k%d" % (i % 10))
    threads = [
        threading.Thread(target=lambda c=c, s=s: s.extend(c)) for c, s in zip(consumers, seen, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    values = [r.value for s in seen for r in s]
    assert sorted(values) == sorted(b"%d" % i for i in range(400))  # each once, none lost
    for records in seen:  # a key's records in the order they were sent
        for key in {r.key for r in records}:
            mine = [int(r.value) for r in records if r.key == key]
            assert mine == sorted(mine)
    assert sum(1 for s in seen if s) >= 2
    for consumer in consumers:
        consumer.close()


def test_replay_from_any_offset_and_latest_sees_only_new_records(coordinator_url):
    _, url = coordinator_url
    with Producer(url, authkey=KEY) as producer:
        for i in range(50):
            producer.send("r", b"%d" % i)
    latest = Consumer("r", address=url, authkey=KEY, timeout=0.2)
    with Consumer("r", address=url, authkey=KEY, auto_offset_reset="earliest", timeout=0.2) as replay:
        assert len(list(replay)) == 50
        replay.seek(45)
        assert [int(r.value) for r in replay] == [45, 46, 47, 48, 49]
        with pytest.raises(TopicError, match="beyond the end"):
            replay.seek(51)
        replay.seek(50)
        assert replay.poll(0.1) == []
    assert list(latest) == []
    with Producer(url, authkey=KEY) as producer:
        producer.send("r", b"new")
    assert [r.value for r in latest] == [b"new"]
    latest.close()


def test_commit_and_a_restarted_member_continue_from_the_group_position(coordinator_url):
    _, url = coordinator_url
    with Producer(url, authkey=KEY) as producer:
        for i in range(20):
            producer.send("c", b"%d" % i)
    first = Consumer(
        "c",
        address=url,
        authkey=KEY,
        group="g",
        auto_offset_reset="earliest",
        auto_commit=False,
        max_records=20,
    )
    assert len(first.poll(5)) == 20
    first.seek(0)  # in a group: moves the group's position back, as after a failed batch
    records = iter(first)
    assert [next(records).offset for _ in range(12)] == list(range(12))  # 20 fetched, 12 handed out
    first.commit()  # acknowledges the 12 it handed out, not the 8 still in its buffer
    first.client.close()  # dies without leaving: its other 8 go back to the group
    with Consumer("c", address=url, authkey=KEY, group="g", timeout=0.5) as second:
        assert [r.offset for r in second] == list(range(12, 20))
    with pytest.raises(TopicError, match="needs a group"):
        Consumer("c", address=url, authkey=KEY).commit()


def test_bad_input_fails_only_itself():
    with Coordinator(KEY, max_message=64 * 1024) as coordinator:
        url = coordinator.serve("tcp://127.0.0.1:0")
        with Producer(url, authkey=KEY) as producer:
            with pytest.raises(MessageTooLarge):
                producer.send("b", b"x" * 100_000).result(10)
            with pytest.raises(TopicError, match="not a topic name"):
                producer.send("not a name!", b"x")
            with pytest.raises(TypeError):
                producer.send("b", 42)  # type: ignore[arg-type]
            producer.client.max_message = 1 << 20  # as if it believed in a larger limit
            with pytest.raises(TopicError, match="larger than"):
                producer.send("b", b"y" * 64_300).result(10)  # fits a message, not a record
            assert producer.send("b", b"fine").result(10).offset == 0
        consumer = Consumer("b", address=url, authkey=KEY, auto_offset_reset="earliest", timeout=0.3)
        with pytest.raises(TopicError, match="beyond the end"):
            consumer.seek(10)
        with pytest.raises(TopicError, match="partition must be"):
            consumer.seek(0, partition=3)
        with pytest.raises(TopicError, match="no group 'ghost'"):
            coordinator.topics.describe("b", "ghost")
        assert [r.value for r in consumer] == [b"fine"]
        consumer.close()
        with pytest.raises(TopicError, match="not a topic name"):
            Consumer("../etc", address=url, authkey=KEY)


def test_futures_are_concurrent_futures(coordinator_url):
    _, url = coordinator_url
    with Producer(url, authkey=KEY) as producer:
        futures = [producer.send("f", b"%d" % i) for i in range(10)]
        done, _ = concurrent.futures.wait(futures, timeout=10)
        assert len(done) == 10


def test_a_producer_faster_than_the_coordinator_blocks_instead_of_queueing_without_bound(coordinator_url):
    _, url = coordinator_url
    with Producer(url, authkey=KEY, max_queued=100) as producer:
        longest = 0
        for i in range(3000):
            producer.send("fast", b"%d" % i)
            longest = max(longest, producer.queued)
        producer.flush()
    assert longest <= 100


def test_admin_lists_creates_and_describes(coordinator_url):
    from minipool.topics import Admin

    _, url = coordinator_url
    with Admin(url, authkey=KEY) as admin:
        with pytest.raises(TopicError, match="in memory needs a retention_bytes"):
            admin.create("kept", 2, retention_bytes=None)  # keep everything: only on disk
        entry = admin.create("kept", 2, retention_bytes=1 << 24)
        assert entry["config"]["partitions"] == 2 and entry["config"]["retention_bytes"] == 1 << 24
        assert admin.create("kept", 2, retention_bytes=1 << 24)["name"] == "kept"  # the same again: fine
        with pytest.raises(TopicError, match="other settings"):
            admin.create("kept", 3)
        assert "kept" in admin.topics()
        assert admin.describe("kept")[0]["partitions"][1] == {
            "partition": 1,
            "start": 0,
            "end": 0,
            "bytes": 0,
            "segments": 1,
        }
        with pytest.raises(TopicError, match="no group 'nobody'"):
            admin.describe("kept", "nobody")


def test_commit_of_explicit_offsets_acknowledges_everything_below_them(coordinator_url):
    _, url = coordinator_url
    with Producer(url, authkey=KEY) as producer:
        for i in range(30):
            producer.send("x", b"%d" % i)
    consumer = Consumer(
        "x", address=url, authkey=KEY, group="g", auto_offset_reset="earliest", auto_commit=False
    )
    assert len(consumer.poll(5)) == 30
    assert consumer.commit({0: 10}) == [10]  # a checkpoint that covers the first ten
    assert consumer.commit() == [30]  # the rest of what was handed out
    assert consumer.commit({0: 5}) == [30]  # a position never goes back by a commit (seek does that)
    consumer.close()
