"""Where every consumer group stands, journaled: commits, atomic steps, recovery, and backups.

Technique: *a write-ahead record for a step that writes two places, checked against the log on
recovery* (Kafka's transaction markers, reduced to what one centre needs), and *a backup that
copies under the lock and writes outside it* (Redis forks for its RDB snapshot; copying a few
lists of integers does the same job here).

The group positions live in a :class:`~minipool.journal.Journal` of their own, as JSON records:

* a commit: ``{"t": topic, "g": group, "p": partition, "o": committed offset}`` (with ``"r": 1``
  when a seek moved it: what was acknowledged above it no longer counts);
* a step (a pipe set's TOPIC_TRANSACT, :mod:`.step`): ``{"t": topic, "g": group, "a": [[partition,
  first, end], ...], "c": [[partition, committed], ...], "out": [[topic, partition, first offset,
  count], ...]}`` -- the inputs it acknowledges, where that moves the group, where its outputs go.

A snapshot holds each group's committed offsets and the offsets acknowledged above them (as
ranges): inputs acknowledged out of order (a partition moved from a slow instance to another,
which went on) are not handed out again after a restart, so their outputs are not made twice.

A step appends outputs to segment files *and* moves a group's positions: two writes, and a
coordinator killed between them must not leave one without the other. So the step's record is
written first, naming where its outputs will land; the outputs follow while their topics stay
locked, so nothing else lands after them. Steps are applied one at a time, so only the journal's
last record can be a step cut short: on recovery, if the last record is a step whose outputs are
not all in the segments, the step is *discarded* -- its partial outputs are cut off, its
positions are not applied, and a snapshot takes the record out of the journal (else, once new
records filled those offsets, a later recovery would take the step for complete). Its inputs
are then unacknowledged and are handed out again, so their outputs are made exactly once.

A backup (a snapshot of every group's positions) needs the positions as of one instant and no
append while the journal starts a new log: :meth:`Positions.begin_backup` rotates the log and
copies the positions under the service's lock; :meth:`Positions.finish_backup` encodes and
writes the copy, fsyncs and renames, with no lock held, while the channels go on. The backup
is *incremental* where it is cheap to be: only the groups journaled since the last backup are
copied and encoded again (a centre holds many groups, and few of them move at a time), the
others' encoded entries are reused, so the lock is held for microseconds whatever the number of
groups.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..journal import Journal
from .groups import Group
from .topic import Topic

__all__ = ["Positions", "SNAPSHOT_EVERY", "Backup"]

log = logging.getLogger("minipool.topics")

#: Journal records between two backups.
SNAPSHOT_EVERY = 10_000

#: (topic, group) -> per partition: the committed offset, and the offsets acknowledged above it.
State = dict[tuple[str, str], list[tuple[int, set[int]]]]
#: A backup under way: its generation and the positions of the groups that moved since the last.
Backup = tuple[int, State]


def _partition(state: State, topic: str, group: str, partition: int) -> tuple[int, set[int]]:
    positions = state.setdefault((topic, group), [])
    positions.extend((0, set()) for _ in range(partition + 1 - len(positions)))
    return positions[partition]


def _apply(state: State, entry: dict[str, Any]) -> None:
    topic, group = entry["t"], entry["g"]
    for partition, first, end in entry.get("a", ()):
        _partition(state, topic, group, partition)[1].update(range(first, end))
    for partition, offset in entry["c"] if "c" in entry else [(entry["p"], entry["o"])]:
        _, acked = _partition(state, topic, group, partition)
        kept = set() if entry.get("r") else {o for o in acked if o > offset}
        state[(topic, group)][partition] = (offset, kept)


def _written(step: dict[str, Any], topics: dict[str, Topic]) -> bool:
    """Whether every output of ``step`` is in its partition."""
    for name, partition, first, count in step["out"]:
        topic = topics.get(name)
        if (
            topic is None
            or partition >= len(topic.partitions)
            or topic.bounds()[partition][1] < first + count
        ):
            return False
    return True


def _ranges(offsets: set[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for offset in sorted(offsets):
        if out and out[-1][1] == offset:
            out[-1][1] += 1
        else:
            out.append([offset, offset + 1])
    return out


class Positions:
    """The journal of the group positions in ``directory``, with ``fsync`` as the topics'."""

    def __init__(self, directory: Path, fsync: str) -> None:
        self.journal = Journal(directory, fsync=fsync, name="groups")
        self.since_backup = 0
        self.backing_up = False  # guarded by the service's lock
        self.moved: set[tuple[str, str]] | None = None  # journaled since the last backup (None: all)
        self.encoded: dict[tuple[str, str], bytes] = {}  # each group's entry in the last snapshot
        self.backups = 0
        self.discarded = 0  # steps cut short by a crash and discarded on recovery

    def restore(self, topics: dict[str, Topic]) -> State:
        """The positions as the journal left them, a step cut short discarded (see above)."""
        replay = self.journal.replay()
        state: State = {}
        if replay.snapshot is not None:
            for entry in json.loads(replay.snapshot):
                acked = {
                    p: {o for first, end in spans for o in range(first, end)}
                    for p, spans in entry.get("a", ())
                }
                state[(entry["t"], entry["g"])] = [
                    (c, acked.get(p, set())) for p, c in enumerate(entry["positions"])
                ]
        entries = [json.loads(record) for record in replay.records]
        last = entries.pop() if entries and "out" in entries[-1] else None
        for entry in entries:
            _apply(state, entry)
        if last is not None and _written(last, topics):
            _apply(state, last)
        elif last is not None:
            for name, partition, first, _ in last["out"]:
                if name in topics and partition < len(topics[name].partitions):
                    topics[name].cut(partition, first)
            log.warning("a step on %s for group %s was cut short: discarded", last["t"], last["g"])
            self.discarded += 1
            self.journal.snapshot(_encode(state))
        return state

    def commit(self, topic: str, group: Group, partitions: Iterable[int], seek: bool = False) -> None:
        """Journal the committed offsets of ``partitions`` (under the service's lock); ``seek``:
        they were moved, and what was acknowledged above them no longer counts."""
        reset = {"r": 1} if seek else {}
        records = [
            json.dumps(
                {"t": topic, "g": group.name, "p": p, "o": group.cursors[p].committed, **reset}
            ).encode()
            for p in partitions
        ]
        if records:
            self.journal.append_many(records)
            self.since_backup += len(records)
            if self.moved is not None:
                self.moved.add((topic, group.name))

    def step(
        self,
        topic: str,
        group: Group,
        acks: list[tuple[int, int, int]],
        out: list[tuple[str, int, int, int]],
    ) -> None:
        """Journal a step before its outputs are written: the inputs it acknowledges, the
        positions that moves the group to, and where each run of its outputs will land
        (``[topic, partition, first, count]``)."""
        committed = sorted(group.committed_after(acks).items())
        record = {"t": topic, "g": group.name, "a": acks, "c": committed, "out": out}
        self.journal.append(json.dumps(record).encode())
        self.since_backup += 1
        if self.moved is not None:
            self.moved.add((topic, group.name))

    @property
    def due(self) -> bool:
        return self.since_backup >= SNAPSHOT_EVERY and not self.backing_up

    def begin_backup(self, groups: dict[tuple[str, str], Group]) -> Backup | None:
        """Under the service's lock: start the journal's next log and copy the positions of
        the groups that moved since the last backup. None while another one is under way."""
        if self.backing_up:
            return None
        generation = self.journal.rotate()
        keys = groups if self.moved is None else [key for key in self.moved if key in groups]
        copy = {key: [(c.committed, set(c.acked)) for c in groups[key].cursors] for key in keys}
        self.moved = set()
        self.backing_up = True
        self.since_backup = 0
        return generation, copy

    def finish_backup(self, backup: Backup) -> None:
        """With no lock held: write the positions as of :meth:`begin_backup` as the snapshot of
        its generation."""
        generation, copy = backup
        try:
            for key, positions in copy.items():
                self.encoded[key] = _encode_group(key, positions)
            self.journal.write_snapshot(generation, b"[" + b",".join(self.encoded.values()) + b"]")
            self.backups += 1
        finally:
            self.backing_up = False

    def close(self) -> None:
        self.journal.close()


def _encode_group(key: tuple[str, str], positions: list[tuple[int, set[int]]]) -> bytes:
    entry = {
        "t": key[0],
        "g": key[1],
        "positions": [committed for committed, _ in positions],
        "a": [[p, _ranges(acked)] for p, (_, acked) in enumerate(positions) if acked],
    }
    return json.dumps(entry).encode()


def _encode(state: State) -> bytes:
    return b"[" + b",".join(_encode_group(key, positions) for key, positions in state.items()) + b"]"
