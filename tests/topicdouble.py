"""An in-memory partitioned log with a consumer and a producer that speak the pipeline's
GroupConsumer / TopicProducer protocols: a test double for the topic source and sink machinery
(crashes at chosen points, a group commit that lags), with no coordinator in the way."""

from __future__ import annotations

import threading
import time
import zlib
from typing import NamedTuple


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float


class Crash(Exception):
    """Stands for the process dying at this point."""


class Log:
    def __init__(self, topic: str = "t", partitions: int = 1) -> None:
        self.topic = topic
        self.partitions: list[list[Record]] = [[] for _ in range(partitions)]
        self.committed: dict[str, dict[int, int]] = {}
        self.lock = threading.Lock()

    def append(self, value: bytes, key: bytes | None = None, timestamp: float | None = None) -> Record:
        with self.lock:
            p = 0 if key is None else zlib.crc32(key) % len(self.partitions)
            part = self.partitions[p]
            record = Record(
                self.topic, p, len(part), key, value, time.time() if timestamp is None else timestamp
            )
            part.append(record)
            return record

    def values(self) -> list[bytes]:
        return [r.value for part in self.partitions for r in part]

    def consumer(self, group: str) -> Consumer:
        return Consumer(self, group)

    def producer(self, crash_after: int | None = None) -> Producer:
        return Producer(self, crash_after)


class Consumer:
    """Reads every partition for its group; ``commit`` acknowledges all it handed out, as
    minipool's consumer does with ``auto_commit=False``."""

    def __init__(self, log: Log, group: str) -> None:
        self.log, self.group = log, group
        self.next = dict(log.committed.get(group, {}))
        self.handed: dict[int, int] = {}
        self.commits = 0

    def poll(self, timeout: float | None = None) -> list[Record]:
        out = []
        with self.log.lock:
            for p, part in enumerate(self.log.partitions):
                start = self.next.get(p, 0)
                batch = part[start : start + 50]
                out.extend(batch)
                self.next[p] = start + len(batch)
                if batch:
                    self.handed[p] = start + len(batch)
        if not out:
            time.sleep(min(timeout or 0.005, 0.005))
        return out

    def commit(self) -> None:
        self.log.committed[self.group] = {**self.log.committed.get(self.group, {}), **self.handed}
        self.commits += 1

    def seek(self, offset: int, partition: int = 0) -> None:
        self.log.committed.setdefault(self.group, {})[partition] = offset
        self.next[partition] = offset
        self.handed.pop(partition, None)

    def close(self) -> None:
        pass


class Producer:
    def __init__(self, log: Log, crash_after: int | None) -> None:
        self.log, self.crash_after, self.sent = log, crash_after, 0

    def send(self, value: bytes, key: bytes | None) -> None:
        if self.crash_after is not None and self.sent >= self.crash_after:
            raise Crash(f"died after {self.sent} records")
        self.log.append(value, key)
        self.sent += 1

    def flush(self) -> None:
        pass

    def end_offset(self) -> int:
        with self.log.lock:
            return sum(len(p) for p in self.log.partitions)

    def close(self) -> None:
        pass
