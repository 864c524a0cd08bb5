"""The coordinator's task journal: the scheduler's changes written ahead, replayed on restart.

Technique: *stateful computing with backups* (seed 000 §2.2-2.3) and seed 001's recovery log,
built on :mod:`minipool.journal` (Redis's AOF + RDB). This module is the cluster's part: what a
coordinator journals about its tasks and how a replay rebuilds a scheduler; the files, their
framing and the snapshot blob are the journal package's. Three kinds of record are written
*before* their effects leave the coordinator:

* ``submit`` -- a task was accepted (its key, number, priority, timeout and body);
* ``done`` -- a task finished (its outcome, so it can be delivered after a restart);
* ``forget`` -- a queued task was cancelled.

Each record is a fixed ``struct`` head (kind, task number, the client's number for it, body
format, priority, timeout, outcome kind, two lengths), the client id and codec name, and the
body. A task whose function travels by value is a ``submit`` of its own kind letter that also
names the interpreter its code needs, so a restored coordinator sends it only to workers that
can load it, as the first one did. Replay is *idempotent*: a ``submit`` for a task already
known, or a ``done`` for one already finished, changes nothing. That is what makes snapshots simple: every
``snapshot_every`` records (or more, when the state is bigger than that) the coordinator writes
its whole state (live tasks as ``submit`` records, stored outcomes as ``done`` records) and the
journal starts a fresh log (see :meth:`TaskJournal.maybe_snapshot`).

On restart the coordinator has every accepted task back: unfinished ones are queued again, and
finished ones wait for their client to reconnect (it resubmits what it is still waiting for,
and gets the stored outcome instead of a second run).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..journal import Journal, pack_records, unpack_records
from ..wire import Format, Kind
from .scheduler import Effects, Scheduler
from .state import Outcome, Task, TaskState

__all__ = ["TaskJournal", "encode_task_record", "pack_task_record", "decode_task_record"]

log = logging.getLogger("minipool.durable")

FLUSH_INTERVAL = 0.01  # seconds a record may wait in the buffer (everysec, no)

# kind | number | client task | format | priority | timeout (NaN: none) | result kind | lengths
_RECORD = struct.Struct("!cQQBidBHB")
KINDS = {"submit": b"S", "done": b"D", "forget": b"F"}
NAMES = {v: k for k, v in KINDS.items()}
# A submit whose function travels by value: after the codec name, the interpreter its code
# needs (one length byte, then the name), so a restored coordinator still routes it only to
# workers that can load it.
_BY_VALUE = b"V"
_NAN = float("nan")


def encode_task_record(kind: str, meta: dict[str, Any], body: bytes) -> bytes:
    return pack_task_record(
        kind,
        meta["n"],
        meta["c"],
        meta["i"],
        meta["f"],
        meta["k"],
        meta.get("p", 0),
        meta.get("t"),
        meta.get("r", 0),
        body,
        meta.get("v"),
    )


def pack_task_record(
    kind: str,
    number: int,
    client: str,
    task: int,
    fmt: int,
    codec: str,
    priority: int,
    timeout: float | None,
    result: int,
    body: bytes,
    needs: str | None = None,
) -> bytes:
    """One record, from its fields (the hot path: no dictionary in between). ``needs``: the
    interpreter a by-value task's code needs (``submit`` records only)."""
    cid = client.encode()
    cname = codec.encode()
    tag, interpreter = KINDS[kind], b""
    if needs is not None and kind == "submit":
        tag, interpreter = _BY_VALUE, needs.encode()
        interpreter = bytes((len(interpreter),)) + interpreter
    return b"".join(
        (
            _RECORD.pack(
                tag,
                number,
                task,
                fmt,
                priority,
                _NAN if timeout is None else timeout,
                result,
                len(cid),
                len(cname),
            ),
            cid,
            cname,
            interpreter,
            body,
        )
    )


def decode_task_record(record: bytes) -> tuple[str, dict[str, Any], bytes]:
    tag, number, task, fmt, priority, timeout, result, clen, klen = _RECORD.unpack_from(record)
    start = _RECORD.size
    client = record[start : start + clen].decode()
    codec = record[start + clen : start + clen + klen].decode()
    meta = {"n": number, "c": client, "i": task, "f": fmt, "k": codec, "p": priority, "r": result}
    if timeout == timeout:  # not NaN
        meta["t"] = timeout
    end = start + clen + klen
    if tag == _BY_VALUE:
        size = record[end]
        meta["v"] = record[end + 1 : end + 1 + size].decode()
        return "submit", meta, record[end + 1 + size :]
    return NAMES[tag], meta, record[end:]


class TaskJournal:
    """The coordinator's journal of tasks.

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
        self._since_snapshot = 0
        self._last_snapshot = 0  # records in the last snapshot
        # everysec / no: records gather here and leave in one write every FLUSH_INTERVAL, as
        # Redis's AOF buffer does. (A client resubmits whatever a crash takes from the buffer.)
        self._buffer: list[bytes] = []
        self._buffer_lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._flush_loop, daemon=True, name="minipool-journal").start()
        self.damage: str | None = None
        self.restored = 0

    def write(self, records: Sequence[tuple[Any, ...]]) -> None:
        """Append records (tuples of :func:`pack_task_record`'s arguments). With ``fsync="always"``
        this returns once they are on disk (and concurrent writers share one fsync); otherwise
        they are written within FLUSH_INTERVAL."""
        encoded = [pack_task_record(*r) for r in records]
        self._since_snapshot += len(encoded)
        if self.fsync == "always" and any(r[0] == "submit" for r in records):
            self._journal.append_many(encoded)  # an accepted task is on disk before it runs
        else:
            # Outcomes need not wait: one lost in a crash only means the task runs again after
            # the restart, and its client, which keeps one future per task, drops a second one.
            with self._buffer_lock:
                self._buffer.extend(encoded)

    def _flush_buffer(self) -> None:
        with self._buffer_lock:
            batch, self._buffer = self._buffer, []
            if batch:
                self._journal.append_many(batch)

    def _flush_loop(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            self._flush_buffer()

    def restore(self, scheduler: Scheduler) -> None:
        """Rebuild ``scheduler`` from the newest snapshot and the log after it."""
        replay = self._journal.replay()
        if replay.damage:
            self.damage = replay.damage
            log.warning("journal damage (the valid prefix was kept): %s", replay.damage)
        records = unpack_records(replay.snapshot) if replay.snapshot else []
        journaling, scheduler.journaling = scheduler.journaling, False
        try:
            for record in [*records, *replay.records]:
                self._apply(scheduler, *decode_task_record(record))
        finally:
            scheduler.journaling = journaling
        self.restored = len(scheduler.tasks)
        if records or replay.records:
            log.info(
                "journal: restored %d unfinished task(s) and %d stored outcome(s)",
                len(scheduler.tasks),
                len(scheduler.results),
            )
            state = _state(scheduler.tasks.values(), scheduler.results.items())
            self._journal.snapshot(pack_records(state))
            self._last_snapshot = len(state)

    @staticmethod
    def _apply(scheduler: Scheduler, kind: str, meta: dict[str, Any], body: bytes) -> None:
        key = (meta["c"], meta["i"])
        if kind == "submit":
            headers = {"priority": meta.get("p", 0)}
            if meta.get("t") is not None:
                headers["timeout"] = meta["t"]
            if meta.get("v") is not None:
                headers["interpreter"] = meta["v"]
            scheduler.submit(
                meta["c"], meta["i"], body, Format(meta["f"]), meta["k"], headers, Effects(), number=meta["n"]
            )
        elif kind == "done":
            task = scheduler.by_key.get(key)
            if task is not None:
                task.state = TaskState.DONE
                scheduler.tasks.pop(task.number, None)
                scheduler.by_key.pop(key, None)
            scheduler.store(key, Outcome(Kind(meta["r"]), Format(meta["f"]), meta["k"], body))
            scheduler.next_number = max(scheduler.next_number, meta["n"] + 1)
        elif kind == "forget":
            task = scheduler.by_key.pop(key, None)
            if task is not None:
                task.state = TaskState.CANCELLED
                scheduler.tasks.pop(task.number, None)

    def maybe_snapshot(self, lock: threading.Lock, scheduler: Scheduler) -> None:
        """Compact the journal if enough records were written since the last snapshot: at
        least ``snapshot_every``, and at least as many as that snapshot held (Redis rewrites
        its AOF when it has doubled since the last rewrite). So a big state -- a million queued
        tasks -- is not rewritten every ``snapshot_every`` records: a snapshot never costs
        more than the log it replaces.

        A backup must not stall the traffic it backs up (seed 001's third open problem). The
        coordinator's lock is held only to copy the *references* to the live tasks and stored
        outcomes (what a record holds of them never changes once made) and to start the new
        log: every record made before is in that copy (wherever it lands, old log or new,
        replay is idempotent) and every record made after goes to the new log. Encoding,
        writing and fsyncing the snapshot happen after the lock is let go; until the snapshot
        is in place a replay reads the old base and both logs, so a crash meanwhile loses
        nothing.
        """
        if self._since_snapshot < max(self.snapshot_every, self._last_snapshot):
            return
        with lock:
            self._flush_buffer()
            tasks, results = list(scheduler.tasks.values()), list(scheduler.results.items())
            generation = self._journal.rotate()
            self._since_snapshot = 0
        state = _state(tasks, results)
        self._journal.write_snapshot(generation, pack_records(state))
        self._last_snapshot = len(state)

    def describe(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "fsync": self.fsync,
            "damage": self.damage,
            "restored_tasks": self.restored,
        }

    def close(self) -> None:
        self._closed.set()
        self._flush_buffer()
        self._journal.close()


def _state(tasks: Iterable[Task], results: Iterable[tuple[tuple[str, int], Outcome]]) -> list[bytes]:
    """The records of a snapshot: the live tasks as ``submit``, stored outcomes as ``done``."""
    records = [encode_task_record("submit", t.meta(), t.body) for t in tasks]
    for (client, number), outcome in results:
        meta = {
            "n": 0,
            "c": client,
            "i": number,
            "r": int(outcome.kind),
            "f": int(outcome.fmt),
            "k": outcome.codec,
        }
        records.append(encode_task_record("done", meta, outcome.body))
    return records
