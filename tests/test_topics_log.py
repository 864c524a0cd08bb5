"""The message log without a network: record bytes, segments and their index, retention,
consumer groups as data, and the service that hosts them (positions kept across a restart)."""

import os
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipool.errors import TopicError
from minipool.topics.groups import Group
from minipool.topics.records import (
    check_topic_name,
    frame,
    frames,
    pack_chunk,
    pack_entries,
    partition_for,
    unpack_chunks,
    unpack_entries,
)
from minipool.topics.segments import INDEX_INTERVAL, PartitionLog
from minipool.topics.service import TopicService
from minipool.topics.topic import Topic, TopicConfig
from minipool.wire import Kind, Message

keys = st.none() | st.binary(max_size=20)
entries = st.lists(st.tuples(keys, st.binary(max_size=200)), max_size=30)


@given(entries)
def test_entries_and_frames_round_trip(batch):
    assert unpack_entries(pack_entries(batch)) == batch
    data = b"".join(frame(i, 1.5, k, v) for i, (k, v) in enumerate(batch))
    assert [(k, v) for _, _, _, _, k, v in frames(data)] == batch
    records = unpack_chunks("t", pack_chunk(3, data))
    assert [(r.partition, r.offset, r.key, r.value) for r in records] == [
        (3, i, k, v) for i, (k, v) in enumerate(batch)
    ]


def test_a_torn_or_damaged_frame_ends_the_valid_prefix():
    data = frame(0, 1.0, b"k", b"one") + frame(1, 1.0, None, b"two")
    assert len(list(frames(data[:-1]))) == 1
    damaged = bytearray(data)
    damaged[-1] ^= 1
    assert len(list(frames(bytes(damaged)))) == 1
    with pytest.raises(TopicError, match="damaged record"):
        unpack_chunks("t", pack_chunk(0, bytes(damaged)))
    with pytest.raises(TopicError):
        unpack_entries(pack_entries([(b"k", b"value")])[:-1])


@pytest.mark.parametrize("name", ["", "a/b", "..", "x" * 201, "sp ace", 7, None])
def test_a_topic_name_that_is_not_a_name_is_refused(name):
    with pytest.raises(TopicError, match="not a topic name"):
        check_topic_name(name)


def test_a_key_has_the_same_partition_in_every_process():
    assert partition_for(b"user-1", 8) == zlib.crc32(b"user-1") % 8 == 4  # fixed, not salted


@pytest.fixture(params=["memory", "disk"])
def where(request, tmp_path):
    return None if request.param == "memory" else tmp_path / "p0"


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_a_read_at_any_offset_returns_the_records_from_there(tmp_path_factory, data):
    log = PartitionLog(tmp_path_factory.mktemp("seg"), segment_bytes=8192)
    values = [os.urandom(data.draw(st.integers(0, 600))) for _ in range(120)]
    for i in range(0, 120, 7):
        log.append([(1.0, None, v) for v in values[i : i + 7]])
    offset = data.draw(st.integers(0, 119))
    count = data.draw(st.integers(1, 50))
    got: list[bytes] = []
    while len(got) < count and offset + len(got) < 120:  # a read stops at a segment's end
        chunk, first, n = log.read(offset + len(got), 1 << 20, count - len(got))
        assert first == offset + len(got) and n >= 1
        got += [r.value for r in unpack_chunks("t", pack_chunk(0, chunk))]
    assert got == values[offset : offset + count]
    log.close()


def test_the_index_stays_sparse_and_a_reopened_partition_reads_the_same(tmp_path):
    log = PartitionLog(tmp_path, segment_bytes=1 << 20)
    for _ in range(50):
        log.append([(1.0, b"k", b"v" * 100) for _ in range(100)])
    segment = log.segments[-1]
    assert len(segment.offsets) <= segment.size // INDEX_INTERVAL + 1 < 5000 // 20
    log.close()
    again = PartitionLog(tmp_path, segment_bytes=1 << 20)
    assert (again.start, again.end) == (0, 5000)
    chunk, _, count = again.read(4321, 1 << 20, 3)
    assert [r.offset for r in unpack_chunks("t", pack_chunk(0, chunk))] == [4321, 4322, 4323]
    again.close()


def test_a_torn_tail_is_cut_off_on_reopening(tmp_path):
    log = PartitionLog(tmp_path, segment_bytes=1 << 20)
    log.append([(1.0, None, b"x" * 50) for _ in range(10)])
    log.close()
    path = next(tmp_path.glob("*.log"))
    with open(path, "ab") as f:
        f.write(frame(10, 1.0, None, b"torn")[:-2])
    again = PartitionLog(tmp_path, segment_bytes=1 << 20)
    assert again.end == 10
    assert again.append([(1.0, None, b"next")]) == 10
    assert again.read(10, 100, 1)[2] == 1
    again.close()


def test_cutting_a_partition_drops_the_records_from_an_offset_across_segments(where):
    log = PartitionLog(where, segment_bytes=1024)
    for i in range(60):
        log.append([(1.0, None, b"%03d" % i + b"x" * 60)])
    assert len(log.segments) > 3
    cut_at = log.segments[-3].base + 1  # inside a segment, with two more after it
    log.cut(cut_at)
    assert log.end == cut_at and len(log.segments) == len(log.bases)
    assert log.append([(1.0, None, b"again")]) == cut_at
    if where is not None:
        log.close()
        log = PartitionLog(where, segment_bytes=1024)
        assert log.end == cut_at + 1
    chunk, _, count = log.read(cut_at - 1, 1 << 20, 10)
    values = [r.value for r in unpack_chunks("t", pack_chunk(0, chunk))]
    assert count == 2 and values[0].startswith(b"%03d" % (cut_at - 1)) and values[1] == b"again"
    log.close()


def test_retention_by_size_drops_whole_oldest_segments(where):
    log = PartitionLog(where, segment_bytes=2048)
    for _ in range(100):
        log.append([(time.time(), None, b"r" * 100)])
    assert len(log.segments) > 4
    before = len(log.segments)
    dropped = log.trim(4096, None, time.time())
    assert dropped > 0 and log.start == dropped and len(log.segments) < before
    assert log.size - log.segments[-1].size <= 4096
    chunk, first, count = log.read(0, 1 << 20, 1)  # behind the start: reads from the start
    assert first == log.start and count == 1
    if where is not None:
        assert len(list(where.glob("*.log"))) == len(log.segments)
    log.close()


def test_retention_by_age_keeps_the_active_segment(where):
    log = PartitionLog(where, segment_bytes=1024)
    for _ in range(40):
        log.append([(time.time() - 100, None, b"o" * 100)])
    assert log.trim(None, 10.0, time.time()) > 0
    assert len(log.segments) == 1 and log.end == 40
    log.close()


def test_a_topic_puts_one_key_in_one_partition_in_order():
    topic = Topic("t", TopicConfig(partitions=4), None)
    where = topic.append([(b"user-%d" % (i % 3), b"%d" % i) for i in range(30)])
    by_key: dict[int, list[int]] = {}
    for i, (partition, offset) in enumerate(where):
        by_key.setdefault(i % 3, []).append((partition, offset))
    for placed in by_key.values():
        assert len({p for p, _ in placed}) == 1
        assert [o for _, o in placed] == sorted(o for _, o in placed)
    unkeyed = topic.append([(None, b"x")] * 8)
    assert sorted({p for p, _ in unkeyed}) == [0, 1, 2, 3]


def test_each_partition_has_one_owner_and_a_leaver_s_records_are_redelivered():
    group = Group("g", [0, 0])
    group.join("a")
    group.join("b")
    plan_a = group.plan("a", [10, 10], 100)
    plan_b = group.plan("b", [10, 10], 100)
    assert [p for p, *_ in plan_a] == [0] and [p for p, *_ in plan_b] == [1]
    group.delivered("a", 0, list(range(10)), [])
    group.delivered("b", 1, list(range(10)), [])
    assert group.ack([(0, 0, 2), (0, 5, 6)]) == {0}
    assert group.cursors[0].committed == 2
    assert group.leave("a") == 7  # held 2-4 and 6-9
    ((partition, again, first, new),) = group.plan("b", [10, 10], 100)[:1]
    assert partition == 0 and again == [2, 3, 4, 6, 7, 8, 9] and new == 0
    group.delivered("b", 0, again, [])
    group.ack([(0, o, o + 1) for o in again])
    assert group.cursors[0].committed == 10
    described = group.describe([10, 12])
    assert described["partitions"][1]["lag"] == 12 and described["redelivered"] == 7


def test_a_member_that_never_acknowledges_is_sent_no_more_than_max_pending():
    group = Group("g", [0], max_pending=50)
    group.join("slow")
    total = 0
    for _ in range(5):
        for partition, _, first, new in group.plan("slow", [1_000_000], 40):
            group.delivered("slow", partition, list(range(first, first + new)), [])
            total += new
    assert total == 50 and len(group.cursors[0].pending) == 50


def test_records_dropped_by_retention_before_acknowledgement_are_counted_lost():
    group = Group("g", [0])
    group.join("a")
    group.delivered("a", 0, [0, 1, 2], [])
    group.skip_dropped([5])
    assert group.cursors[0].committed == 5 and group.lost == 5 and not group.cursors[0].pending


def admin(service, **headers):
    reply = service.handle("m", "session", Message(Kind.TOPIC_ADMIN, 1, headers=headers))
    if reply.kind is Kind.TOPIC_ERROR:
        raise TopicError(reply.headers["reason"])
    import json

    return json.loads(reply.body)


def fetch(service, member="m", **headers):
    reply = service.handle(member, member, Message(Kind.TOPIC_FETCH, 1, headers=headers))
    if reply.kind is Kind.TOPIC_ERROR:
        raise TopicError(reply.headers["reason"])
    return unpack_chunks(headers["topic"], reply.body)


def test_a_group_s_committed_position_survives_a_restart_of_the_service(tmp_path):
    service = TopicService(tmp_path, fsync="always")
    service.produce("logs", [(None, b"%d" % i) for i in range(100)])
    got = fetch(service, topic="logs", group="g", reset="earliest", max=60)
    assert len(got) == 60
    fetch(service, topic="logs", group="g", max=10, acks=[[0, 0, 40]])
    service.close()
    again = TopicService(tmp_path, fsync="always")
    (entry,) = again.describe("logs")
    assert entry["partitions"][0]["end"] == 100
    assert entry["groups"][0]["partitions"][0]["committed"] == 40
    assert [r.offset for r in fetch(again, topic="logs", group="g", max=5)] == [40, 41, 42, 43, 44]
    again.close()


def test_bad_requests_get_clear_errors_and_change_nothing():
    service = TopicService(None, max_message=64 * 1024)
    service.produce("logs", [(None, b"ok")])
    with pytest.raises(TopicError, match="larger than"):
        service.produce("logs", [(None, b"x" * 70_000)])
    with pytest.raises(TopicError, match="not a topic name"):
        service.produce("no/such", [(None, b"x")])
    with pytest.raises(TopicError, match="beyond the end"):
        admin(service, op="seek", topic="logs", offset=2)
    with pytest.raises(TopicError, match="no group 'ghost'"):
        admin(service, op="describe", topic="logs", group="ghost")
    with pytest.raises(TopicError, match="no topic 'ghost'"):
        admin(service, op="describe", topic="ghost")
    with pytest.raises(TopicError, match="exists with other settings"):
        admin(service, op="create", topic="logs", config={"partitions": 3})
    with pytest.raises(TopicError, match="acks"):
        fetch(service, topic="logs", group="g", acks="all")
    (entry,) = service.describe("logs")
    assert entry["partitions"][0]["end"] == 1
    assert admin(service, op="seek", topic="logs", offset=0) == [0, 1, 0]
    service.close()


def test_an_in_memory_topic_is_bounded_by_its_retention():
    service = TopicService(None, defaults=TopicConfig(segment_bytes=4096, retention_bytes=16384))
    for _ in range(200):
        service.produce("t", [(None, b"v" * 200)] * 5)
    (entry,) = service.describe("t")
    assert entry["partitions"][0]["bytes"] <= 16384 + 4096 + 5 * 250
    assert entry["partitions"][0]["start"] > 0 and entry["dropped"] == entry["partitions"][0]["start"]
    service.close()


def test_a_fetch_waits_for_a_record_and_returns_as_soon_as_one_is_appended():
    import threading

    service = TopicService(None)
    service.produce("t", [])
    threading.Timer(0.2, service.produce, args=("t", [(None, b"late")])).start()
    start = time.monotonic()
    (record,) = fetch(service, topic="t", positions=[0], wait=5.0)
    assert record.value == b"late" and time.monotonic() - start < 2.0
    start = time.monotonic()
    assert fetch(service, topic="t", positions=[1], wait=0.2) == []
    assert 0.15 < time.monotonic() - start < 2.0
    service.close()


def test_a_group_behind_a_dropped_segment_skips_to_the_start_and_counts_what_it_lost():
    service = TopicService(None, defaults=TopicConfig(segment_bytes=1024, retention_bytes=2048))
    service.produce("t", [])
    fetch(service, topic="t", group="slow", reset="earliest", max=1)  # joins at offset 0
    for _ in range(40):
        service.produce("t", [(None, b"v" * 100)])
    (entry,) = service.describe("t")
    start = entry["partitions"][0]["start"]
    assert start > 0
    records = fetch(service, topic="t", group="slow", max=5)
    assert records[0].offset == start
    (group,) = service.describe("t")[0]["groups"]
    assert group["lost"] == start and group["partitions"][0]["committed"] == start
    replay = fetch(service, topic="t", positions=[0], max=1)  # without a group: from the start too
    assert replay[0].offset == start
    service.close()


def test_with_fsync_always_a_record_is_on_disk_before_it_is_acknowledged(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    always = TopicService(tmp_path / "a", fsync="always")
    always.produce("t", [])  # created
    synced.clear()
    always.produce("t", [(None, b"x")])
    assert synced
    always.close()
    lazy = TopicService(tmp_path / "b", fsync="no")
    lazy.produce("t", [])
    synced.clear()
    lazy.produce("t", [(None, b"x")])
    assert not synced  # written to the OS, which writes it to disk when it likes
    lazy.close()


def test_a_backlog_in_one_partition_starves_no_other():
    service = TopicService(None, defaults=TopicConfig(partitions=2))
    service.produce("t", [(b"busy", b"x")] * 500 + [(b"a", b"y")])
    busy, calm = partition_for(b"busy", 2), partition_for(b"a", 2)
    assert busy != calm
    positions = [0, 0]
    seen = set()
    for _ in range(2):  # without a group
        for record in fetch(service, topic="t", positions=positions, max=100):
            positions[record.partition] = record.offset + 1
            seen.add(record.partition)
    assert seen == {busy, calm}
    grouped = set()
    for _ in range(2):  # one member owning both partitions
        grouped |= {r.partition for r in fetch(service, topic="t", group="g", reset="earliest", max=100)}
    assert grouped == {busy, calm}
    service.close()
