"""A durable coordinator: the scheduler's changes written ahead to a journal, replayed on restart.

Technique: *stateful computing with backups* (seed 000 §2.2-2.3) and seed 001's recovery log,
built on :mod:`minipool.cluster.journal` (Redis's AOF + RDB). Three kinds of record are written
*before* their effects leave the coordinator:

* ``submit`` -- a task was accepted (its key, number, priority, timeout and body);
* ``done`` -- a task finished (its outcome, so it can be delivered after a restart);
* ``forget`` -- a queued task was cancelled.

Each record is ``kind (1 byte) | meta length (u32) | meta (JSON) | body``. Replay is
*idempotent*: a ``submit`` for a task already known, or a ``done`` for one already finished,
changes nothing. That is what makes snapshots simple: every ``snapshot_every`` records the
coordinator writes its whole state (live tasks as ``submit`` records, stored outcomes as
``done`` records) and the journal starts a fresh log. Appends share a gate that the snapshot
closes, so no record produced after the state was taken can be lost with the old log; a record
that lands in both the snapshot and the new log is harmless, because replay is idempotent.

On restart the coordinator has every accepted task back: unfinished ones are queued again, and
finished ones wait for their client to reconnect (it resubmits what it is still waiting for,
and gets the stored outcome instead of a second run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
import threading
from collections.abc import Iterator
from typing import Any

from ..wire import Format, Kind
from .journal import Journal
from .scheduler import Effects, Outcome, Scheduler
from .state import TaskState

__all__ = ["DurableLog", "encode_record", "decode_record"]

log = logging.getLogger("minipool.durable")

_META = struct.Struct("!cI")
KINDS = {"submit": b"S", "done": b"D", "forget": b"F"}
NAMES = {v: k for k, v in KINDS.items()}


def encode_record(kind: str, meta: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(meta, separators=(",", ":")).encode()
    return b"".join((_META.pack(KINDS[kind], len(raw)), raw, body))


def decode_record(record: bytes) -> tuple[str, dict[str, Any], bytes]:
    tag, length = _META.unpack_from(record)
    start = _META.size
    return NAMES[tag], json.loads(record[start:start + length]), record[start + length:]


class _Gate:
    """Many appenders at once, or one snapshot: a small readers-writer lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._closed = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()


class DurableLog:
    """The coordinator's journal.

    Args:
        directory: where the journal's files live.
        fsync: ``always``, ``everysec`` or ``no``.
        snapshot_every: records between snapshots.
    """

    def __init__(self, directory: str, fsync: str = "everysec", snapshot_every: int = 50_000) -> None:
        self.directory = directory
        self.fsync = fsync
        self.snapshot_every = snapshot_every
        self._journal = Journal(directory, fsync=fsync, name="coordinator")
        self._gate = _Gate()
        self._since_snapshot = 0
        self.damage: str | None = None
        self.restored = 0

    def write(self, records: list[tuple[str, dict[str, Any], bytes]]) -> None:
        """Append records; with ``fsync="always"`` this returns once they are on disk."""
        encoded = [encode_record(*r) for r in records]
        with self._gate.shared():
            self._journal.append_many(encoded)
        self._since_snapshot += len(encoded)

    def restore(self, scheduler: Scheduler) -> None:
        """Rebuild ``scheduler`` from the newest snapshot and the log after it."""
        replay = self._journal.replay()
        if replay.damage:
            self.damage = replay.damage
            log.warning("journal damage (the valid prefix was kept): %s", replay.damage)
        records = _split(replay.snapshot) if replay.snapshot else []
        journaling, scheduler.journaling = scheduler.journaling, False
        try:
            for record in [*records, *replay.records]:
                self._apply(scheduler, *decode_record(record))
        finally:
            scheduler.journaling = journaling
        self.restored = len(scheduler.tasks)
        if records or replay.records:
            log.info("journal: restored %d unfinished task(s) and %d stored outcome(s)",
                     len(scheduler.tasks), len(scheduler.results))
            self._journal.snapshot(_join(_state(scheduler)))

    @staticmethod
    def _apply(scheduler: Scheduler, kind: str, meta: dict[str, Any], body: bytes) -> None:
        key = (meta["c"], meta["i"])
        if kind == "submit":
            headers = {"priority": meta.get("p", 0)}
            if meta.get("t") is not None:
                headers["timeout"] = meta["t"]
            scheduler.submit(meta["c"], meta["i"], body, Format(meta["f"]), meta["k"], headers,
                             Effects(), number=meta["n"])
        elif kind == "done":
            task = scheduler.by_key.get(key)
            if task is not None:
                task.state = TaskState.DONE
                scheduler.tasks.pop(task.number, None)
                scheduler.by_key.pop(key, None)
            scheduler.results[key] = Outcome(Kind(meta["r"]), Format(meta["f"]), meta["k"], body)
            scheduler.next_number = max(scheduler.next_number, meta["n"] + 1)
        elif kind == "forget":
            task = scheduler.by_key.pop(key, None)
            if task is not None:
                task.state = TaskState.CANCELLED
                scheduler.tasks.pop(task.number, None)

    def maybe_snapshot(self, lock: threading.Lock, scheduler: Scheduler) -> None:
        """Compact the journal if enough records were written since the last snapshot."""
        if self._since_snapshot < self.snapshot_every:
            return
        with self._gate.exclusive():
            with lock:
                state = _join(_state(scheduler))
            self._journal.snapshot(state)
            self._since_snapshot = 0

    def describe(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "fsync": self.fsync, "damage": self.damage,
                "restored_tasks": self.restored}

    def close(self) -> None:
        self._journal.close()


def _state(scheduler: Scheduler) -> list[bytes]:
    records = [encode_record("submit", t.meta(), t.body) for t in scheduler.tasks.values()]
    for (client, number), outcome in scheduler.results.items():
        meta = {"n": 0, "c": client, "i": number, "r": int(outcome.kind), "f": int(outcome.fmt),
                "k": outcome.codec}
        records.append(encode_record("done", meta, outcome.body))
    return records


_LEN = struct.Struct("!I")


def _join(records: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(r)) + r for r in records)


def _split(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        (n,) = _LEN.unpack_from(blob, pos)
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out
