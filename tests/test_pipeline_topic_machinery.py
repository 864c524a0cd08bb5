"""The topic source and sink against an in-memory log: positions in markers, the group's commit
after the journal, redelivered records dropped, a sink resending exactly what a crash lost."""

from __future__ import annotations

import pytest

from minipool import pipeline as pl
from topicdouble import Crash, Log


def fill(log: Log, n: int, *, keys: int = 10) -> None:
    for i in range(n):
        log.append(str(i).encode(), f"k{i % keys}".encode(), timestamp=i / 100)


def source(log: Log, group: str = "g"):
    return pl.from_topic(log.topic, group=group, idle_timeout=0.2, consumer=lambda: log.consumer(group))


def test_records_arrive_with_their_metadata_and_the_group_commits_the_end():
    log = Log(partitions=2)
    fill(log, 1000)
    records = (source(log) | pl.collect()).run()
    assert sorted(int(r.value) for r in records) == list(range(1000))
    assert all(log.partitions)  # both partitions hold records
    for p in (0, 1):  # order per partition, as the log has it
        assert [r.offset for r in records if r.partition == p] == list(range(len(log.partitions[p])))
    assert log.committed["g"] == {p: len(log.partitions[p]) for p in (0, 1)}
    assert (source(log) | pl.count()).run() == 0  # the group remembers where it was


def test_without_a_journal_the_group_commits_only_what_the_terminal_applied():
    log = Log()
    fill(log, 2000)
    seen = []

    def fragile(record):
        if int(record.value) == 1500:
            raise ValueError("stage failure")
        seen.append(record)

    with pytest.raises(pl.StageFailed):
        (source(log) | pl.sink(fragile)).run()
    committed = log.committed.get("g", {}).get(0, 0)
    assert committed <= 1500  # never past a record whose effect did not happen: at-least-once
    assert [int(r.value) for r in (source(log) | pl.collect()).run()] == list(range(committed, 2000))


def test_stream_commits_only_what_the_caller_consumed():
    log = Log()
    fill(log, 600)
    gen = (source(log) | pl.map(lambda r: int(r.value))).stream()
    assert [next(gen) for _ in range(10)] == list(range(10))
    gen.close()
    assert log.committed.get("g", {}).get(0, 0) <= 10  # not the records still in the pipeline
    rest = list((source(log) | pl.map(lambda r: int(r.value))).stream())
    assert rest[-1] == 599 and log.committed["g"] == {0: 600}


def test_durable_rerun_moves_the_group_to_the_journals_position(tmp_path):
    log = Log()
    fill(log, 3000)
    p = source(log) | pl.map(lambda r: int(r.value)) | pl.reduce(lambda a, b: a + b, 0)
    assert p.run(journal=str(tmp_path)) == sum(range(3000))
    log.committed["g"] = {0: 1000}  # the group's position lags behind the journal's
    more = [log.append(b"5", b"k") for _ in range(4)]
    with p.start(journal=str(tmp_path)) as run:
        assert run.result() == sum(range(3000)) + 5 * len(more)  # nothing counted twice
        assert run.reader is not None and run.reader.skipped == 0  # it seeked: no redelivery
    assert log.committed["g"] == {0: 3004}


def test_records_redelivered_below_the_journals_position_are_dropped(tmp_path):
    log = Log()
    fill(log, 3000)

    def deaf_consumer():  # a group that ignores the seek and redelivers from its own position
        consumer = log.consumer("g")
        consumer.seek = lambda offset, partition=0: None
        return consumer

    p = (
        pl.from_topic("t", group="g", idle_timeout=0.2, consumer=deaf_consumer)
        | pl.map(lambda r: int(r.value))
        | pl.reduce(lambda a, b: a + b, 0)
    )
    assert p.run(journal=str(tmp_path)) == sum(range(3000))
    log.committed["g"] = {0: 1000}
    with p.start(journal=str(tmp_path)) as run:
        assert run.result() == sum(range(3000))
        assert run.reader is not None and run.reader.skipped == 2000


def test_sink_after_a_crash_mid_write_resends_exactly_what_is_missing(tmp_path):
    src = Log("in")
    fill(src, 1200)
    expected_log = Log("out")
    p = source(src) | pl.map(lambda r: r.value + b"!")
    assert (p | pl.to_topic("out", producer=expected_log.producer)).run() == 1200

    src.committed.clear()
    out = Log("out")
    crashing = [out.producer(crash_after=700)]
    with pytest.raises(pl.StageFailed) as failure:
        (p | pl.to_topic("out", producer=lambda: crashing.pop() if crashing else out.producer())).run(
            journal=str(tmp_path)
        )
    assert isinstance(failure.value.__cause__, Crash)
    assert len(out.values()) == 700
    # the group may have committed up to the journal, never past it: the rerun continues there
    written = (p | pl.to_topic("out", producer=out.producer)).run(journal=str(tmp_path))
    assert written == 1200
    assert out.values() == expected_log.values()  # every record once, in order


def test_sink_refuses_a_topic_that_someone_else_wrote_to(tmp_path):
    src, out = Log("in"), Log("out")
    fill(src, 300)
    p = source(src) | pl.map(lambda r: r.value) | pl.to_topic("out", producer=out.producer)
    assert p.run(journal=str(tmp_path)) == 300
    out.append(b"intruder")
    with pytest.raises(pl.PipelineError, match="only producer"):
        p.run(journal=str(tmp_path))


def test_topic_source_and_sink_arguments():
    with pytest.raises(pl.PipelineError, match="address"):
        pl.from_topic("logs", group="g")
    with pytest.raises(pl.PipelineError, match="address"):
        pl.to_topic("counts")
    with pytest.raises(pl.PipelineError, match="not a topic name"):
        pl.from_topic("no/such", group="g", address="tcp://127.0.0.1:1")
    with pytest.raises(pl.PipelineError, match="not a topic name"):
        pl.to_topic("", address="tcp://127.0.0.1:1")
    with pytest.raises(pl.PipelineError, match="auto_offset_reset"):
        pl.from_topic("logs", group="g", address="tcp://127.0.0.1:1", auto_offset_reset="middle")
    with pytest.raises(pl.PipelineError, match="idle_timeout"):
        pl.from_topic("logs", group="g", address="tcp://127.0.0.1:1", idle_timeout=0)
    log = Log()
    with pytest.raises(pl.PipelineError, match="merged"):
        pl.merge(source(log), pl.source([1])).run()
