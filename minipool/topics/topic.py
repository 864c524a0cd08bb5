"""A topic: named partitions, how records are spread over them, and retention.

Technique: *partitioning by key* (Kafka). Records with the same key go to the same partition,
so they keep their order; records without a key are spread round-robin. A partition is the
unit of order and of parallelism: a consumer group gives each partition to one member.

A topic's settings live beside its partitions in ``topic.json`` (written aside and renamed, so
it is whole or absent), and each partition in its own folder ``P/`` of segments
(:mod:`.segments`). Without a directory everything stays in memory, bounded by the same
retention.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import TopicError
from .records import Buffer, check_topic_name, partition_for
from .segments import PartitionLog

__all__ = ["TopicConfig", "Topic"]


@dataclass(frozen=True)
class TopicConfig:
    """How a topic is laid out and how much it keeps.

    ``retention_bytes`` is per partition, like Kafka's ``retention.bytes``; ``None`` keeps
    everything (allowed only with a directory: memory is always bounded).
    """

    partitions: int = 1
    segment_bytes: int = 16 * 1024 * 1024
    retention_bytes: int | None = 256 * 1024 * 1024
    retention_seconds: float | None = 7 * 24 * 3600.0

    def checked(self, on_disk: bool) -> TopicConfig:
        """This config, or a TopicError that says what is wrong with it."""
        if type(self.partitions) is not int or not 1 <= self.partitions <= 1024:
            raise TopicError(f"partitions must be an integer from 1 to 1024, not {self.partitions!r}")
        if type(self.segment_bytes) is not int or self.segment_bytes < 1024:
            raise TopicError(f"segment_bytes must be an integer of at least 1024, not {self.segment_bytes!r}")
        if self.retention_bytes is None and not on_disk:
            raise TopicError("a topic in memory needs a retention_bytes limit")
        if self.retention_bytes is not None and (
            type(self.retention_bytes) is not int or self.retention_bytes < self.segment_bytes
        ):
            raise TopicError("retention_bytes must be an integer no smaller than segment_bytes")
        if self.retention_seconds is not None and not (
            isinstance(self.retention_seconds, (int, float)) and self.retention_seconds > 0
        ):
            raise TopicError("retention_seconds must be a positive number of seconds")
        return self

    @classmethod
    def from_json(cls, data: Any) -> TopicConfig:
        if not isinstance(data, dict) or not set(data) <= set(cls.__dataclass_fields__):
            raise TopicError(f"topic settings must be some of {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


class Topic:
    """The partitions of one topic behind one lock.

    Args:
        name: the topic's name (see :func:`~.records.check_topic_name`).
        config: its layout and retention.
        directory: its folder (``None``: in memory).
    """

    def __init__(self, name: str, config: TopicConfig, directory: Path | None) -> None:
        self.name = check_topic_name(name)
        self.config = config.checked(directory is not None)
        self.directory = directory
        self.lock = threading.Lock()
        self._syncing = threading.Lock()  # one sync at a time (see sync)
        self.dropped = 0  # records deleted by retention since this coordinator started
        self._next_partition = 0
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            settings = directory / "topic.json"
            if not settings.exists():
                tmp = settings.with_suffix(".tmp")
                tmp.write_text(json.dumps(asdict(config)))
                os.replace(tmp, settings)
        self.partitions = [
            PartitionLog(None if directory is None else directory / str(p), config.segment_bytes)
            for p in range(config.partitions)
        ]

    @classmethod
    def open(cls, directory: Path) -> Topic:
        """A topic as it was left in ``directory``."""
        config = TopicConfig.from_json(json.loads((directory / "topic.json").read_text()))
        return cls(directory.name, config, directory)

    def append(self, entries: list[tuple[Buffer | None, Buffer]]) -> list[tuple[int, int]]:
        """Append ``(key, value)`` records; return each one's ``(partition, offset)``."""
        with self.lock:
            return self.write(entries, self.place(entries))

    def place(self, entries: list[tuple[Buffer | None, Buffer]]) -> dict[int, list[int]]:
        """Which records go to which partition: partition -> indexes into ``entries``, by key
        or round-robin. Under :attr:`lock`, as :meth:`write` after it."""
        count = len(self.partitions)
        placed: dict[int, list[int]] = {}
        for i, (key, _) in enumerate(entries):
            if key is None:
                p = self._next_partition
                self._next_partition = (p + 1) % count
            else:
                p = partition_for(key, count)
            placed.setdefault(p, []).append(i)
        return placed

    def write(
        self, entries: list[tuple[Buffer | None, Buffer]], placed: dict[int, list[int]]
    ) -> list[tuple[int, int]]:
        """Append ``entries`` where :meth:`place` put them (under :attr:`lock`): each partition's
        records land at its current end, in order. Returns each one's ``(partition, offset)``."""
        now = time.time()
        where: list[tuple[int, int]] = [(0, 0)] * len(entries)
        for p, indexes in placed.items():
            partition = self.partitions[p]
            segments = len(partition.segments)
            first = partition.append([(now, entries[i][0], entries[i][1]) for i in indexes])
            if len(partition.segments) != segments:  # rolled: the oldest may have to go
                self.dropped += partition.trim(self.config.retention_bytes, None, now)
            for n, i in enumerate(indexes):
                where[i] = (p, first + n)
        return where

    def cut(self, partition: int, offset: int) -> None:
        """Drop the records of ``partition`` from ``offset`` on: what a step cut short by a
        crash had written (:mod:`.positions`)."""
        with self.lock:
            self.partitions[partition].cut(offset)

    def read(self, partition: int, offset: int, max_bytes: int, max_records: int) -> tuple[bytes, int, int]:
        """See :meth:`PartitionLog.read`."""
        with self.lock:
            return self.partitions[partition].read(offset, max_bytes, max_records)

    def bounds(self) -> list[tuple[int, int]]:
        """``(start, end)`` offsets of each partition."""
        with self.lock:
            return [(p.start, p.end) for p in self.partitions]

    def sync(self) -> None:
        """fsync what was appended before this call. :attr:`lock` is held only to find the
        files: an fsync takes milliseconds, and appends and reads go on meanwhile. Syncs take
        turns, so one that finds nothing new returns only once the sync that took its records
        is done (``fsync="always"``: a producer is acknowledged after its records are on disk)."""
        with self._syncing:
            with self.lock:
                fds = [fd for partition in self.partitions for fd in partition.unsynced()]
            try:
                for fd in fds:
                    os.fsync(fd)
            finally:
                for fd in fds:
                    os.close(fd)

    def trim(self, now: float) -> None:
        with self.lock:
            for partition in self.partitions:
                self.dropped += partition.trim(
                    self.config.retention_bytes, self.config.retention_seconds, now
                )

    def describe(self) -> dict[str, Any]:
        with self.lock:
            partitions = [
                {"partition": i, "start": p.start, "end": p.end, "bytes": p.size, "segments": len(p.segments)}
                for i, p in enumerate(self.partitions)
            ]
        return {
            "name": self.name,
            "config": asdict(self.config),
            "partitions": partitions,
            "dropped": self.dropped,
        }

    def close(self) -> None:
        with self.lock:
            for partition in self.partitions:
                partition.close()
