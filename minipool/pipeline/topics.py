"""Topics as a pipeline's source: positions in markers, the group committed after the journal.

Technique: Flink's Kafka source, on minipool's journal. A topic source is a
:class:`~.sources.Reader`: it knows its *position* (the next offset of each partition) and the
pipeline carries it in its progress markers. In a durable run (``run(journal=DIR)``) the
terminal stage appends ``(seq, position, stage states, records)`` to the journal in one atomic
append *before* applying the records, and only then is the consumer group's position committed.
So the journal, not the group, is the truth: a rerun after a SIGKILL restores the state and the
position from the journal and moves the group there (``seek``), so the group's commit, which may
lag the journal by a checkpoint, never causes a record to count twice. Without a journal the
group's position still moves only after a marker's records took effect: at-least-once. The
sink half, :func:`~.topicsink.to_topic`, is in :mod:`.topicsink`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..errors import TopicError
from ..topics.records import check_topic_name
from .core import Pipeline
from .errors import PipelineError
from .sources import CHECKPOINT_NOW, Source

__all__ = ["GroupConsumer", "TopicReader", "from_topic", "topic_name"]

log = logging.getLogger("minipool.pipeline")

Position = dict[int, int]  # partition -> next offset to read


class GroupConsumer(Protocol):
    """What a topic source needs from a consumer: :class:`minipool.topics.Consumer`'s methods."""

    def poll(self, timeout: float | None = None) -> list[Any]:
        """Records (with ``.partition`` and ``.offset``) that arrived, waiting up to ``timeout``;
        they count as handed out."""
        ...

    def commit(self, offsets: dict[int, int] | None = None) -> list[int]:
        """Acknowledge every record handed out so far: the group's position moves past them."""
        ...

    def seek(self, offset: int, partition: int = 0) -> None:
        """Move the group's position in ``partition`` to ``offset``."""
        ...

    def close(self) -> None: ...


#: Records handed out past the group's position before the reader asks for a checkpoint now.
ASK_AT = 2000
#: ...and before it stops reading to wait for one (the coordinator sends a member at most
#: 10,000 unacknowledged records per partition: past that, the group stalls).
WAIT_AT = 8000
#: How long it waits then: a durable run's barriers carry held records' state, so its
#: checkpoint catches up; without a journal a stage may hold records indefinitely.
WAIT_DURABLE, WAIT_FAST = 5.0, 0.5


class TopicReader:
    """One run's reader of a topic through a consumer group (a :class:`~.sources.Reader`).

    The source thread polls and commits; other threads only hand it checkpoints, so the
    consumer is used from one thread at a time (the run's ``close`` commits the last one after
    the source thread ended). A consumer commits everything it handed out, so the reader
    commits when the latest checkpoint covers all of it. Past ``ASK_AT`` uncommitted records
    it asks the run for a checkpoint (``CHECKPOINT_NOW``); past ``WAIT_AT`` it stops reading
    until one comes. If none does in time (a stage holds records and the run has no journal),
    it commits what it handed out from then on, and says so in the log.
    """

    def __init__(self, connect: Callable[[], GroupConsumer], idle_timeout: float | None) -> None:
        self._connect, self.idle_timeout = connect, idle_timeout
        self._consumer: GroupConsumer | None = None
        self._lock = threading.Lock()
        self._checkpoint: Position = {}
        self._handed: Position = {}  # partition -> the end of what poll() handed out
        self._uncommitted = 0
        self._asked = False  # a checkpoint was asked for since the last commit
        self._tracked = True  # False: commit as read (no checkpoints, or none in time)
        self._stop = threading.Event()  # the run's: a stopping run commits nothing more
        self._durable = False
        self.skipped = 0  # redelivered records the journal had already applied

    def records(self, position: Position | None, stop: threading.Event, durable: bool) -> Iterator[Any]:
        self._stop, self._durable = stop, durable
        consumer = self._connect()
        self._consumer = consumer
        done = dict(position or {})
        self._checkpoint = dict(done)
        for partition, offset in done.items():  # the journal, not the group, says where we are
            consumer.seek(offset, partition)
        idle_since = time.monotonic()
        while not stop.is_set():
            if self._tracked and self._uncommitted >= ASK_AT and not self._asked:
                self._asked = True
                yield CHECKPOINT_NOW  # a marker (a barrier) right after what was handed out
            self._settle(consumer)
            batch = consumer.poll(0.05)
            if not batch:
                if self.idle_timeout is not None and time.monotonic() - idle_since >= self.idle_timeout:
                    return
                continue
            idle_since = time.monotonic()
            handed = self._handed
            self._uncommitted += len(batch)
            for record in batch:
                if record.offset >= handed.get(record.partition, 0):
                    handed[record.partition] = record.offset + 1
            for record in batch:
                if record.offset < done.get(record.partition, 0):
                    self.skipped += 1  # applied before the restart (a safety net: we seeked)
                    continue
                yield record

    def advance(self, position: Position | None, chunk: list[Any]) -> Position:
        after = dict(position or {})
        for record in chunk:
            if record.offset >= after.get(record.partition, 0):
                after[record.partition] = record.offset + 1
        return after

    def checkpoint(self, position: Position | None) -> None:
        if position is not None:
            with self._lock:
                self._checkpoint = position

    def commit_as_read(self) -> None:
        self._tracked = False

    def _covered(self) -> bool:
        with self._lock:
            checkpoint = self._checkpoint
        return all(checkpoint.get(p, 0) >= end for p, end in self._handed.items())

    def _settle(self, consumer: GroupConsumer) -> None:
        """Commit if the checkpoint covers what was handed out; wait for it past WAIT_AT."""
        if not self._uncommitted:
            return
        if self._tracked and not self._covered():
            if self._uncommitted < WAIT_AT:
                return
            deadline = time.monotonic() + (WAIT_DURABLE if self._durable else WAIT_FAST)
            while not self._covered() and time.monotonic() < deadline:
                if self._stop.is_set():
                    return
                time.sleep(0.002)  # the stages drain what they hold; the terminal checkpoints
            if not self._covered() and not self._durable:
                self._tracked = False
                log.info(
                    "a stage holds records past the last checkpoint: the consumer group now "
                    "commits records as they are read (at-least-once no longer holds for them)"
                )
        consumer.commit()
        self._uncommitted, self._asked = 0, False

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if self.skipped:
            log.info("dropped %d redelivered records the journal had already applied", self.skipped)
        if consumer is not None:
            try:
                if self._covered() or not self._tracked:
                    self._settle(consumer)
            finally:
                consumer.close()


def topic_name(topic: Any) -> str:
    """``topic`` if it can name a topic, else a PipelineError saying why (before any run)."""
    try:
        return check_topic_name(topic)
    except TopicError as exc:
        raise PipelineError(str(exc)) from None


def from_topic(
    topic: str,
    *,
    group: str,
    address: str | None = None,
    pool: Any = None,
    authkey: bytes | str | None = None,
    auto_offset_reset: str = "earliest",
    idle_timeout: float | None = None,
    consumer: Callable[[], GroupConsumer] | None = None,
    name: str | None = None,
) -> Pipeline:
    """Start a pipeline from a topic, read as a member of consumer group ``group``.

    The records are the topic's own :class:`minipool.topics.Record` (``.key``, ``.value``,
    ``.timestamp``, ``.partition``, ``.offset``). Each run opens its own consumer.

    Args:
        topic, group: what to read, and the consumer group whose position the run moves.
        address, authkey: the coordinator hosting the topic (``MINIPOOL_AUTHKEY`` by default);
            or ``pool=``, a :class:`~minipool.Pool` whose embedded coordinator hosts it.
        auto_offset_reset: where a new group starts: ``"earliest"`` (default) or ``"latest"``.
        idle_timeout: end the stream after this many seconds without a record (Kafka's
            ``consumer_timeout_ms``); ``None`` (default): never, the stream is endless.
        consumer: makes the consumer instead (any :class:`GroupConsumer`).

    Raises:
        PipelineError: none of ``address``, ``pool``, ``consumer``; a bad ``idle_timeout`` or
            ``auto_offset_reset``; a topic name that is not a name.
    """
    topic_name(topic)
    if idle_timeout is not None and (
        isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)) or not idle_timeout > 0
    ):
        raise PipelineError(f"idle_timeout must be a positive number of seconds, got {idle_timeout!r}")
    if auto_offset_reset not in ("earliest", "latest"):
        raise PipelineError(f"auto_offset_reset must be 'earliest' or 'latest', got {auto_offset_reset!r}")
    if consumer is None:
        if address is None and pool is None:
            raise PipelineError("from_topic() needs address= or pool= (the coordinator hosting the topic)")
        consumer = functools.partial(
            _group_consumer,
            topic,
            group,
            address=address,
            pool=pool,
            authkey=authkey,
            reset=auto_offset_reset,
        )
    connect = consumer
    return Pipeline(
        Source((), name or f"topic:{topic}", reader=lambda: TopicReader(connect, idle_timeout)), []
    )


def _group_consumer(
    topic: str, group: str, *, address: str | None, pool: Any, authkey: Any, reset: str
) -> GroupConsumer:
    from ..topics.consumer import Consumer  # the client half: imported when a run starts

    # auto_commit off: the reader commits once a checkpoint covers what it handed out
    return Consumer(
        topic,
        address=address,
        pool=pool,
        authkey=authkey,
        group=group,
        auto_offset_reset=reset,
        auto_commit=False,
    )
