"""Backups of the group positions without stalls: the lock is held only to copy what moved."""

import threading
import time

import pytest

from minipool.journal import Journal
from minipool.topics.positions import SNAPSHOT_EVERY
from minipool.topics.records import pack_entries, unpack_chunks
from minipool.topics.service import TopicService
from minipool.topics.topic import TopicConfig


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def step(service, group, member, count):
    """One exchange: fetch ``count`` records of ``in`` and send them on to ``out``."""
    request = {"topic": "in", "group": group, "reset": "earliest", "max": count}
    records = unpack_chunks("in", service.fetch(member, member, request))
    acks = [[r.partition, r.offset, r.offset + 1] for r in records]
    body = pack_entries([(None, r.value) for r in records])
    return service.transact(
        {"topic": "in", "group": group, "acks": acks, "outputs": [["out", len(records)]]}, body
    )


def committed(service, group):
    return [p["committed"] for p in service.describe("in", group)[0]["groups"][0]["partitions"]]


def test_channel_traffic_goes_on_while_a_backup_is_written(tmp_path, monkeypatch):
    service = TopicService(tmp_path, fsync="everysec")
    service.topic("in", TopicConfig(partitions=2))
    service.produce("in", [(None, b"%d" % i) for i in range(20)])
    assert step(service, "a", "m", 4)["appended"] == 4
    writing, release = threading.Event(), threading.Event()
    write_snapshot = Journal.write_snapshot

    def slow_write(self, generation, state):
        writing.set()
        assert release.wait(10)
        write_snapshot(self, generation, state)

    monkeypatch.setattr(Journal, "write_snapshot", slow_write)
    result = []
    backup = threading.Thread(target=lambda: result.append(service.backup()))
    backup.start()
    try:
        assert writing.wait(5)
        # The snapshot is being written: every kind of channel traffic goes on meanwhile.
        assert service.cond.acquire(timeout=2)
        service.cond.release()
        service.produce("in", [(None, b"late")])
        assert step(service, "a", "m", 10)["appended"] == 10
        assert step(service, "b", "n", 3)["appended"] == 3  # a group made during the backup
        assert service.backup() is None  # one at a time
    finally:
        release.set()
        backup.join(10)
    assert not backup.is_alive() and result[0] is not None and result[0] < 2
    before = committed(service, "a"), committed(service, "b")
    service.close()
    service = TopicService(tmp_path, fsync="everysec")  # the snapshot, then what came after it
    try:
        assert (committed(service, "a"), committed(service, "b")) == before
        assert sum(before[0]) == 14 and sum(before[1]) == 3
    finally:
        service.close()


def test_a_backup_copies_only_the_groups_that_moved_and_restores_them_all(tmp_path):
    service = TopicService(tmp_path, fsync="no")
    service.produce("in", [(None, b"%d" % i) for i in range(30)])
    for n, group in enumerate(["a", "b", "c"]):
        step(service, group, group, n + 1)
    assert service.backup() is not None
    step(service, "b", "b", 5)
    generation, copied = service.positions.begin_backup(service.groups)
    assert set(copied) == {("in", "b")}  # the others' entries are reused
    service.positions.finish_backup((generation, copied))
    step(service, "c", "c", 1)  # after the last backup: in the journal's log
    service.close()
    service = TopicService(tmp_path, fsync="no")
    try:
        assert [committed(service, g) for g in "abc"] == [[1], [7], [4]]
        assert service.positions.journal.replay().snapshot is not None
    finally:
        service.close()


def test_the_centre_backs_up_by_itself_once_the_journal_has_grown(tmp_path):
    service = TopicService(tmp_path, fsync="no")
    try:
        service.produce("in", [(None, b"x")])
        step(service, "a", "m", 1)
        service.positions.since_backup = SNAPSHOT_EVERY
        wait_for(lambda: service.positions.backups == 1)
        assert service.positions.since_backup < SNAPSHOT_EVERY
    finally:
        service.close()


@pytest.mark.parametrize("written", [False, True])
def test_a_journal_rotated_but_not_yet_snapshotted_replays_whole(tmp_path, written):
    journal = Journal(tmp_path, fsync="no")
    journal.append(b"before")
    generation = journal.rotate()
    journal.append(b"after")
    if written:
        journal.write_snapshot(generation, b"state")
    journal.close()  # as a crash before (or after) the snapshot's rename leaves the files
    with Journal(tmp_path, fsync="no") as again:
        replay = again.replay()
        assert (replay.snapshot, replay.records) == (
            (b"state", [b"after"]) if written else (None, [b"before", b"after"])
        )
        again.append(b"more")
    with Journal(tmp_path, fsync="no") as third:
        assert third.replay().records[-2:] == [b"after", b"more"]


def test_the_backups_bench_reports_every_phase_beside_the_steady_one(capsys):
    import argparse

    from minipool.bench import backups

    results = backups.run(argparse.Namespace(groups=20, batch=5, seconds=0.2, rounds=1))
    phases = results["phases"]
    assert list(phases) == ["steady", "snapshot under the lock", "backup()"]
    assert phases["steady"]["snapshots"] == 0 and phases["steady"]["p99_over_steady"] == 1
    assert phases["backup()"]["snapshots"] > 0 and phases["snapshot under the lock"]["snapshots"] > 0
    assert all(p["exchanges"] > 0 for p in phases.values())
    assert "p99 / steady" in capsys.readouterr().out


def test_a_topic_is_fsynced_without_holding_its_lock_and_a_later_sync_waits_for_it(tmp_path, monkeypatch):
    import os

    from minipool.topics.topic import Topic

    topic = Topic("t", TopicConfig(), tmp_path / "t")
    topic.append([(None, b"first"), (None, b"second")])
    syncing, release, fsync = threading.Event(), threading.Event(), os.fsync

    def slow_fsync(fd):
        syncing.set()
        assert release.wait(10)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    first = threading.Thread(target=topic.sync)
    first.start()
    try:
        assert syncing.wait(5)
        assert topic.read(0, 0, 1 << 20, 10)[2] == 2  # the lock is free meanwhile
        # Nothing new to sync, but the records it would vouch for are not on disk yet: it waits.
        second = threading.Thread(target=topic.sync)
        second.start()
        second.join(0.3)
        assert second.is_alive()
        assert topic.append([(None, b"third")]) == [(0, 2)]
    finally:
        release.set()
        first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()
    topic.close()
