"""The journal: round trips, snapshots, torn and corrupted files, group commit, SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipool.journal import Journal, JournalError, pack_records, read_journal, unpack_records
from minipool.journal.format import LOG_HEADER, RECORD_HEADER

ROOT = Path(__file__).resolve().parent.parent


def _log(directory: Path, generation: int = 0) -> Path:
    return directory / f"journal.{generation:08d}.log"


def _snap(directory: Path, generation: int) -> Path:
    return directory / f"journal.{generation:08d}.snap"


@pytest.mark.parametrize("policy", ["always", "everysec", "no"])
def test_round_trip(tmp_path, policy):
    with Journal(tmp_path, fsync=policy) as journal:
        journal.append(b"one")
        journal.append_many([b"two", b"", b"\x00" * 1000])
        assert journal.replay().records == [b"one", b"two", b"", b"\x00" * 1000]
    again = Journal(tmp_path)
    try:
        replay = again.replay()
        assert replay.snapshot is None
        assert replay.records == [b"one", b"two", b"", b"\x00" * 1000]
        assert replay.damage is None
        again.append(b"three")
        assert again.replay().records[-1] == b"three"
    finally:
        again.close()
    if policy == "everysec":
        assert not any(t.name.startswith("journal-fsync") for t in threading.enumerate())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_records_round_trip(tmp_path_factory, records):
    directory = tmp_path_factory.mktemp("j")
    with Journal(directory, fsync="no") as journal:
        journal.append_many(records)
    assert read_journal(directory).records == records


def test_snapshot_then_records_after_it(tmp_path):
    with Journal(tmp_path, fsync="always") as journal:
        journal.append_many([b"a", b"b"])
        journal.snapshot(b"state-1")
        journal.append(b"c")
        journal.snapshot(b"state-2")
        journal.append_many([b"d", b"e"])
    replay = read_journal(tmp_path)
    assert (replay.snapshot, replay.records, replay.damage) == (b"state-2", [b"d", b"e"], None)
    # Older generations are gone: the directory holds one snapshot and one log.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "journal.00000002.log",
        "journal.00000002.snap",
        "journal.lock",
    ]


def test_journals_with_different_names_share_a_directory(tmp_path):
    with Journal(tmp_path, name="tasks") as tasks, Journal(tmp_path, name="results") as results:
        tasks.append(b"t")
        results.snapshot(b"r")
    assert read_journal(tmp_path, name="tasks").records == [b"t"]
    assert read_journal(tmp_path, name="results").snapshot == b"r"


def _three_records(directory: Path) -> tuple[int, int]:
    """Write records a, bb, ccc; return (offset of the last record, file size)."""
    with Journal(directory, fsync="always") as journal:
        journal.append_many([b"a", b"bb"])
        journal.append(b"ccc" * 10)
    size = _log(directory).stat().st_size
    return size - RECORD_HEADER.size - 30, size


def test_truncation_at_every_offset_of_the_last_record(tmp_path):
    source = tmp_path / "source"
    last, size = _three_records(source)
    for cut in range(last, size):
        directory = tmp_path / f"cut{cut}"
        shutil.copytree(source, directory)
        os.truncate(_log(directory), cut)
        replay = read_journal(directory)
        assert replay.records == [b"a", b"bb"]
        if cut == last:
            assert replay.damage is None  # a clean cut between records is not damage
            continue
        assert "journal.00000000.log" in replay.damage and f"offset {last}" in replay.damage
        # Opening for append cuts the bad tail off, then new records follow the valid prefix.
        with Journal(directory, fsync="always") as journal:
            journal.append(b"new")
            assert journal.replay().damage == replay.damage
        assert _log(directory).stat().st_size == last + RECORD_HEADER.size + 3
        assert read_journal(directory) == type(replay)(None, [b"a", b"bb", b"new"], None)


def test_truncated_header_is_damage_and_repaired(tmp_path):
    _three_records(tmp_path)
    os.truncate(_log(tmp_path), LOG_HEADER.size - 1)
    assert read_journal(tmp_path).damage.startswith("journal.00000000.log at offset 0")
    with Journal(tmp_path) as journal:
        journal.append(b"x")
    assert read_journal(tmp_path).records == [b"x"]


def test_flipped_byte_keeps_the_prefix_before_it(tmp_path):
    _three_records(tmp_path)
    path = _log(tmp_path)
    data = bytearray(path.read_bytes())
    second = LOG_HEADER.size + RECORD_HEADER.size + 1
    data[second + RECORD_HEADER.size] ^= 0x01  # inside the payload of b"bb"
    path.write_bytes(bytes(data))
    replay = read_journal(tmp_path)
    assert replay.records == [b"a"]
    assert f"offset {second}: record checksum mismatch" in replay.damage
    assert "kept 1 records" in replay.damage


def test_huge_announced_length_is_truncation_not_allocation(tmp_path):
    _three_records(tmp_path)
    with open(_log(tmp_path), "ab") as f:
        f.write(RECORD_HEADER.pack(2**32 - 1, 0))
    replay = read_journal(tmp_path)
    assert len(replay.records) == 3 and "truncated record" in replay.damage


def test_leftover_tmp_snapshot_is_ignored_and_removed(tmp_path):
    with Journal(tmp_path) as journal:
        journal.append(b"a")
    tmp = tmp_path / "journal.00000001.snap.tmp"
    tmp.write_bytes(b"half a snaps")
    assert read_journal(tmp_path) == type(read_journal(tmp_path))(None, [b"a"], None)
    with Journal(tmp_path) as journal:
        journal.append(b"b")
    assert not tmp.exists()
    assert read_journal(tmp_path).records == [b"a", b"b"]


def test_crash_between_snapshot_rename_and_log_rotation(tmp_path):
    with Journal(tmp_path) as journal:
        journal.append_many([b"a", b"b"])
    old_log = _log(tmp_path).read_bytes()
    with Journal(tmp_path) as journal:
        journal.snapshot(b"state after a, b")
    # Put the directory back as it was just after the rename: new snapshot, old log, no new log.
    _log(tmp_path, 1).unlink()
    _log(tmp_path, 0).write_bytes(old_log)
    replay = read_journal(tmp_path)
    assert (replay.snapshot, replay.records, replay.damage) == (b"state after a, b", [], None)
    with Journal(tmp_path) as journal:
        journal.append(b"c")
    assert read_journal(tmp_path).records == [b"c"]
    assert not _log(tmp_path, 0).exists()


def test_corrupt_snapshot_is_damage_and_set_aside(tmp_path):
    with Journal(tmp_path) as journal:
        journal.snapshot(b"good state")
        journal.append(b"a")
    path = _snap(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    replay = read_journal(tmp_path)
    assert replay.snapshot is None and replay.records == []
    assert "journal.00000001.snap: checksum mismatch" in replay.damage
    assert "journal.00000000.log is missing" in replay.damage
    with Journal(tmp_path) as journal:  # nothing is invented; the bad files are kept aside
        assert journal.replay().records == []
    assert (tmp_path / "journal.00000001.snap.damaged").exists()
    assert (tmp_path / "journal.00000001.log.damaged").exists()


def test_concurrent_appenders_are_all_durable_in_order(tmp_path):
    journal = Journal(tmp_path, fsync="always")
    errors: list[BaseException] = []

    def appender(thread: int) -> None:
        try:
            for i in range(60):
                journal.append(f"{thread}:{i}".encode())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close()
    assert not errors
    records = [r.decode() for r in read_journal(tmp_path).records]
    assert len(records) == 8 * 60
    for thread in range(8):
        mine = [int(r.split(":")[1]) for r in records if r.startswith(f"{thread}:")]
        assert mine == list(range(60))


def test_bad_policy_and_use_after_close(tmp_path):
    with pytest.raises(ValueError, match="always, everysec, no"):
        Journal(tmp_path, fsync="sometimes")
    journal = Journal(tmp_path)
    journal.close()
    journal.close()
    with pytest.raises(JournalError):
        journal.append(b"late")


def test_killed_mid_append_keeps_every_acknowledged_record(tmp_path):
    child = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(ROOT)!r})
        from minipool.journal import Journal
        journal = Journal({str(tmp_path)!r}, fsync="always")
        lock = threading.Lock()
        def appender(t):
            for i in range(100000):
                journal.append(f"{{t}}:{{i}}".encode())
                with lock:
                    print(f"{{t}}:{{i}}", flush=True)
        for t in range(4):
            threading.Thread(target=appender, args=(t,), daemon=True).start()
        threading.Event().wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    try:
        for line in proc.stdout:
            acknowledged.append(line.strip())
            if len(acknowledged) >= 300:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert len(acknowledged) == 300
    with Journal(tmp_path) as journal:
        replay = journal.replay()
    stored = {r.decode() for r in replay.records}
    assert set(acknowledged) <= stored
    for t in range(4):  # each thread's records are a gap-free prefix
        mine = sorted(int(r.split(":")[1]) for r in stored if r.startswith(f"{t}:"))
        assert mine == list(range(len(mine)))


def test_measure_appends_writes_every_record(tmp_path):
    from minipool.journal import measure_appends

    assert measure_appends(tmp_path, fsync="always", threads=4, records=40) > 0
    assert len(read_journal(tmp_path, name="measure-always-4").records) == 40


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path):
    first = Journal(tmp_path)
    try:
        with pytest.raises(JournalError, match="another open journal"):
            Journal(tmp_path)
        with Journal(tmp_path, name="other"):
            pass
    finally:
        first.close()
    with Journal(tmp_path) as again:
        again.append(b"ok")


def test_group_commit_covers_waiting_appenders_with_one_fsync(tmp_path, monkeypatch):
    journal = Journal(tmp_path, fsync="always")
    real_fsync, calls, all_queued = os.fsync, [], threading.Event()

    def held_fsync(fd: int) -> None:  # the first fsync lasts until everyone has queued
        calls.append(fd)
        all_queued.wait(timeout=30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", held_fsync)
    threads = [threading.Thread(target=journal.append, args=(b"%d" % i,)) for i in range(8)]
    for t in threads:
        t.start()
    while journal._appended < 8:
        threading.Event().wait(0.001)
    all_queued.set()
    for t in threads:
        t.join()
    assert 1 <= len(calls) <= 2  # the leader's own record, then the seven who waited
    monkeypatch.setattr(os, "fsync", real_fsync)
    journal.close()
    assert sorted(read_journal(tmp_path).records) == sorted(b"%d" % i for i in range(8))


@given(st.lists(st.binary(max_size=64), max_size=20))
@settings(max_examples=50, deadline=None)
def test_a_snapshot_of_records_reads_back_as_the_same_records(records):
    assert unpack_records(pack_records(records)) == records
