"""The message log the coordinator hosts: topics, consumer groups, and what each request does.

Technique: *a log with consumer groups inside the broker*, as Redis Streams lives inside Redis.
The coordinator's broker hands every topic message (kinds 50-69) to :meth:`TopicService.handle`,
which answers with one reply message; the broker sends it on the path every reply takes.
Records go to :mod:`.topic` (segment files, or memory), group state is :mod:`.groups`' data,
and each change to a group's committed position is written to a journal of its own
(:mod:`.positions`, backed up without stalling the channels), so positions survive a
coordinator killed with SIGKILL; a pipe set's step is :mod:`.step`'s. The coordinator holds no
record in memory when it has a directory: a fetch reads from the segment files.

Topics are **created on first use** -- by a producer's first record or a consumer's first fetch
-- with the coordinator's default settings, as Kafka does with ``auto.create.topics.enable``:
coursework code then runs without a setup step. ``topics create`` (or ``create_topic``) makes
one with its own partition count and retention beforehand; asking again with other settings is
an error, never a silent change.

A fetch that finds nothing waits (a *long poll*) for at most its ``wait`` seconds, on a
condition that every append notifies: a consumer that is caught up gets a record as soon as it
is appended, without polling in a loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import MinipoolError, TopicError
from ..wire import HEADROOM, Format, Kind, Message
from .groups import Group
from .positions import Positions
from .records import FRAME_HEAD, Buffer, check_acks, check_count, check_topic_name, pack_chunk, unpack_entries
from .step import transact
from .topic import Topic, TopicConfig

__all__ = ["TopicService", "MAX_FETCH_RECORDS"]

MAX_FETCH_RECORDS = 10_000
_RESETS = ("earliest", "latest")

log = logging.getLogger("minipool.topics")


class TopicService:
    """Every topic and consumer group of one coordinator.

    Args:
        directory: where topics and group positions live (``None``: in memory, bounded).
        fsync: ``always`` (a producer is acknowledged once its records are on disk),
            ``everysec`` or ``no``, as the coordinator's journal.
        max_message: the largest message the coordinator accepts; a record must fit in one.
        defaults: the settings of a topic created on first use.
    """

    def __init__(
        self,
        directory: str | Path | None,
        *,
        fsync: str = "everysec",
        max_message: int = 16 * 1024 * 1024,
        defaults: TopicConfig | None = None,
    ) -> None:
        self.root = None if directory is None else Path(directory)
        self.fsync = fsync
        self.max_message = max_message
        if defaults is None:
            defaults = (
                TopicConfig() if self.root is not None else TopicConfig(retention_bytes=64 * 1024 * 1024)
            )
        self.defaults = defaults.checked(self.root is not None)
        self.topics: dict[str, Topic] = {}
        self.groups: dict[tuple[str, str], Group] = {}
        self.sessions: dict[str, object] = {}  # member id -> the connection it fetches on
        self.memberships: dict[str, set[tuple[str, str]]] = {}
        self.cond = threading.Condition()
        self.waiting_for_room = 0  # capped steps waiting (room.py): an acknowledgement wakes them
        self.positions: Positions | None = None  # the group positions' journal (positions.py)
        self.turn = 0
        if self.root is not None:
            logs = self.root / "log"
            logs.mkdir(parents=True, exist_ok=True)
            for folder in sorted(logs.iterdir()):
                if (folder / "topic.json").exists():
                    self.topics[folder.name] = Topic.open(folder)
            self.positions = Positions(self.root / "groups", fsync)
            for (topic, name), positions in self.positions.restore(self.topics).items():
                if topic in self.topics:
                    count = len(self.topics[topic].partitions)
                    positions = (positions + [(0, set())] * count)[:count]
                    group = self.groups[(topic, name)] = Group(name, [c for c, _ in positions])
                    for cursor, (_, acked) in zip(group.cursors, positions, strict=True):
                        cursor.resume(acked)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="minipool-topics")
        self._ticker.start()

    # -- persistence of group positions (positions.py) ---------------------------------------

    def _persist(self, topic: str, group: Group, partitions: set[int] | range, seek: bool = False) -> None:
        """Journal the committed offsets of ``partitions`` (under ``cond``)."""
        if self.positions is not None:
            self.positions.commit(topic, group, partitions, seek)

    def backup(self) -> float | None:
        """Snapshot every group's positions, holding the lock only to copy what moved (traffic
        goes on while the snapshot is written). Returns the seconds the lock was held, or
        None if there is no journal or a backup is under way.

        Raises:
            JournalError: the snapshot could not be written (the journal still replays).
        """
        if self.positions is None:
            return None
        with self.cond:
            started = time.perf_counter()
            backup = self.positions.begin_backup(self.groups)
            held = time.perf_counter() - started
        if backup is None:
            return None
        self.positions.finish_backup(backup)
        return held

    # -- topics ----------------------------------------------------------------------------

    def topic(self, name: Any, config: TopicConfig | None = None, *, create: bool = True) -> Topic:
        """The topic ``name``, created with ``config`` (or the defaults) if it does not exist."""
        name = check_topic_name(name)
        with self.cond:
            topic = self.topics.get(name)
            if topic is None:
                if not create:
                    raise TopicError(f"no topic {name!r}")
                folder = None if self.root is None else self.root / "log" / name
                topic = self.topics[name] = Topic(name, config or self.defaults, folder)
            elif config is not None and config != topic.config:
                raise TopicError(f"topic {name!r} exists with other settings: {topic.describe()['config']}")
            return topic

    def produce(self, name: Any, entries: list[tuple[Buffer | None, Buffer]]) -> list[tuple[int, int]]:
        """Append records; return each one's ``(partition, offset)`` once it is appended (and
        on disk, with ``fsync="always"``)."""
        self.check_sizes(entries)
        topic = self.topic(name)
        where = topic.append(entries) if entries else []
        if self.fsync == "always":
            topic.sync()
        with self.cond:
            self.cond.notify_all()
        return where

    def check_sizes(self, entries: list[tuple[Buffer | None, Buffer]]) -> None:
        """Raise TopicError if a record could not be fetched in one message."""
        limit = self.max_message - HEADROOM - FRAME_HEAD.size - 8
        for key, value in entries:
            if len(value) + len(key or b"") > limit:
                raise TopicError(
                    f"a record of {len(value) + len(key or b''):,} bytes is larger than the"
                    f" {limit:,} bytes a record may have (max_message less its envelope)"
                )

    # -- fetching --------------------------------------------------------------------------

    def fetch(self, member: str, session: object, request: dict[str, Any]) -> bytes:
        """Records for a consumer: from its group (``group``) or from ``positions``; waits
        up to ``wait`` seconds for some."""
        topic = self.topic(request.get("topic"))
        limit = check_count(request.get("max", 500), "max", 1, MAX_FETCH_RECORDS)
        budget = max(
            1, min(check_count(request.get("bytes", 1 << 20), "bytes", 1, 1 << 40), self.max_message // 2)
        )
        wait = min(float(request.get("wait", 0.0)), 5.0)
        deadline = time.monotonic() + max(0.0, wait)
        group_name = request.get("group")
        with self.cond:
            while True:
                if group_name is None:
                    body = self._read_positions(topic, request.get("positions"), limit, budget)
                else:
                    body = self._read_group(topic, group_name, member, session, request, limit, budget)
                    request = {**request, "acks": []}  # acknowledged once, not at every retry
                remaining = deadline - time.monotonic()
                if body or remaining <= 0:
                    return body
                self.cond.wait(remaining)

    def _read_positions(self, topic: Topic, positions: Any, limit: int, budget: int) -> bytes:
        if not isinstance(positions, list) or len(positions) != len(topic.partitions):
            raise TopicError(f"a fetch from {topic.name!r} needs one position per partition")
        chunks = []
        count = len(positions)
        self.turn += 1  # start at another partition each time: a backlog in one starves none
        for partition in [(self.turn + i) % count for i in range(count)]:
            offset = positions[partition]
            if limit <= 0 or budget <= 0:
                break
            data, _, count = topic.read(partition, check_count(offset, "offset", 0, 1 << 62), budget, limit)
            if count:
                chunks.append(pack_chunk(partition, data))
                limit -= count
                budget -= len(data)
        return b"".join(chunks)

    def _read_group(
        self,
        topic: Topic,
        name: Any,
        member: str,
        session: object,
        request: dict[str, Any],
        limit: int,
        budget: int,
    ) -> bytes:
        group = self.join(topic, name, member, session, request.get("reset", "latest"))
        moved = group.ack(check_acks(request.get("acks", [])))
        if moved:
            self._persist(topic.name, group, moved)
            if self.waiting_for_room:  # room in the topic for a capped step (room.py)
                self.cond.notify_all()
        if group.balanced:
            group.pulled(member, time.monotonic())
        bounds = topic.bounds()
        group.skip_dropped([start for start, _ in bounds])
        chunks, handed = [], 0
        for partition, again, first, new in group.plan(member, [end for _, end in bounds], limit):
            sent, gone = [], []
            for offset in again or ():
                data, got, count = topic.read(partition, offset, 1, 1)
                if count and got == offset:
                    chunks.append(pack_chunk(partition, data))
                    sent.append(offset)
                else:
                    gone.append(offset)
            if new and budget > 0:
                data, got, count = topic.read(partition, first, budget, new)
                if count:
                    chunks.append(pack_chunk(partition, data))
                    sent.extend(range(got, got + count))
                    budget -= len(data)
            group.delivered(member, partition, sent, gone)
            handed += len(sent)
        if group.balanced and handed >= limit:  # a short pull times the producer, not the member
            group.handed(member, handed, time.monotonic())
        return b"".join(chunks)

    def group(self, topic: Topic, name: Any, reset: Any = "latest") -> Group:
        """The group ``name`` of ``topic``, created at the start or the end of each partition."""
        if not isinstance(name, str) or not name:
            raise TopicError(f"{name!r} is not a group name")
        group = self.groups.get((topic.name, name))
        if group is None:
            if reset not in _RESETS:
                raise TopicError(f"auto_offset_reset must be 'earliest' or 'latest', not {reset!r}")
            bounds = topic.bounds()
            group = Group(name, [start if reset == "earliest" else end for start, end in bounds])
            self.groups[(topic.name, name)] = group
            self._persist(topic.name, group, range(len(bounds)))
        return group

    def join(self, topic: Topic, name: Any, member: str, session: object, reset: Any) -> Group:
        """``member`` (fetching on ``session``) is in group ``name``, from now on if not yet."""
        group = self.group(topic, name, reset)
        if group.join(member):
            self.memberships.setdefault(member, set()).add((topic.name, group.name))
        self.sessions[member] = session
        return group

    def member_left(self, member: str, session: object) -> None:
        """``member``'s connection ``session`` closed: its pending records go to the others,
        unless it has already come back on another connection."""
        with self.cond:
            if self.sessions.get(member) is not session:
                return
            del self.sessions[member]
            for key in self.memberships.pop(member, ()):
                group = self.groups.get(key)
                if group is not None:
                    group.leave(member)
            self.cond.notify_all()  # the new owners may have records waiting

    # -- administration --------------------------------------------------------------------

    def admin(self, member: str, session: object, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "list":
            with self.cond:
                return sorted(self.topics)
        if op == "create":  # what the request leaves out is the coordinator's default
            config = TopicConfig.from_json({**asdict(self.defaults), **(request.get("config") or {})})
            return self.topic(request.get("topic"), config).describe()
        if op == "describe":
            return self.describe(request.get("topic"), request.get("group"))
        if op == "bounds":
            return self.topic(request.get("topic")).bounds()
        topic = self.topic(request.get("topic"), create=op == "join")
        with self.cond:
            if op == "seek":
                return self._seek(topic, request)
            if op == "join":
                joined = self.join(
                    topic, request.get("group"), member, session, request.get("reset", "latest")
                )
                return joined.members[member]
            group = self.groups.get((topic.name, str(request.get("group"))))
            if group is None:
                raise TopicError(f"no group {request.get('group')!r} on topic {topic.name!r}")
            if op == "commit":
                self._persist(topic.name, group, group.ack(check_acks(request.get("acks", []))))
                return [c.committed for c in group.cursors]
            if op == "balance":  # by pull time (seed 001's dynamic weights) from now on
                group.balanced = request.get("by") == "pull-time"
                return group.describe([end for _, end in topic.bounds()])
            if op == "leave":
                if self.sessions.get(member) is session:
                    self.memberships.get(member, set()).discard((topic.name, group.name))
                group.leave(member)
                self.cond.notify_all()
                return None
        raise TopicError(f"unknown topic operation {op!r}")

    def _seek(self, topic: Topic, request: dict[str, Any]) -> list[int]:
        partition = check_count(request.get("partition", 0), "partition", 0, len(topic.partitions) - 1)
        offset = check_count(request.get("offset"), "offset", 0, 1 << 62)
        start, end = topic.bounds()[partition]
        if offset > end:
            raise TopicError(
                f"offset {offset} is beyond the end of {topic.name!r} partition {partition}"
                f" (its next offset is {end})"
            )
        offset = max(offset, start)
        if request.get("group") is not None:
            group = self.group(topic, request.get("group"))
            group.cursors[partition].move_to(offset)
            self._persist(topic.name, group, {partition}, seek=True)
        return [start, end, offset]

    def describe(self, name: Any = None, group: Any = None) -> list[dict[str, Any]]:
        """Each topic (or just ``name``) as plain JSON-able data: its settings, its partitions'
        ``start``/``end`` offsets and sizes, and its groups with their members, committed
        offsets and lag. docs/topics.md lists every field; the dashboard reads it.

        Raises:
            TopicError: ``name`` is not a topic, or ``group`` is not one of its groups.
        """
        with self.cond:
            names = sorted(self.topics) if name is None else [check_topic_name(name)]
            report = []
            for topic_name in names:
                topic = self.topics.get(topic_name)
                if topic is None:
                    raise TopicError(f"no topic {topic_name!r}")
                entry = topic.describe()
                ends = [p["end"] for p in entry["partitions"]]
                groups = [g for (t, _), g in sorted(self.groups.items()) if t == topic_name]
                if group is not None:
                    groups = [g for g in groups if g.name == group]
                    if not groups:
                        raise TopicError(f"no group {group!r} on topic {topic_name!r}")
                entry["groups"] = [g.describe(ends) for g in groups]
                report.append(entry)
            return report

    def transact(self, request: dict[str, Any], body: bytes) -> dict[str, Any]:
        """Append a pipe set's outputs and acknowledge the inputs they came from as one step,
        atomic across a crash (:mod:`.step`): both happen, or (when some input was already
        acknowledged, by a redelivery's other taker, or by this same step sent again) neither
        does, and the reply's ``done`` names the inputs to drop. ``outputs`` is ``[[topic,
        count], ...]`` over ``body``."""
        return transact(self, request, body)

    # -- the wire --------------------------------------------------------------------------

    def handle(self, member: str, session: object, msg: Message) -> Message:
        """The reply to one topic message from the client ``member`` on connection ``session``.
        A request that fails gets a TOPIC_ERROR saying why; nothing else is affected."""
        try:
            if msg.kind is Kind.TOPIC_PRODUCE:
                where = self.produce(msg.headers.get("topic"), unpack_entries(msg.body))
                body = json.dumps({"partitions": [p for p, _ in where], "offsets": [o for _, o in where]})
                return Message(Kind.TOPIC_ACKS, msg.id, body.encode(), fmt=Format.JSON)
            if msg.kind is Kind.TOPIC_FETCH:
                return Message(Kind.TOPIC_RECORDS, msg.id, self.fetch(member, session, msg.headers))
            if msg.kind is Kind.TOPIC_TRANSACT:
                body = json.dumps(self.transact(msg.headers, msg.body))
                return Message(Kind.TOPIC_REPLY, msg.id, body.encode(), fmt=Format.JSON)
            if msg.kind is Kind.TOPIC_ADMIN:
                body = json.dumps(self.admin(member, session, msg.headers))
                return Message(Kind.TOPIC_REPLY, msg.id, body.encode(), fmt=Format.JSON)
            raise TopicError(f"a client may not send {msg.kind.name}")
        except (MinipoolError, ValueError, TypeError, OSError) as exc:
            return Message(Kind.TOPIC_ERROR, msg.id, headers={"reason": str(exc)})

    def _tick(self) -> None:
        """Once a second: fsync what was appended (``everysec``), apply retention by age, and
        back up the group positions when their journal has grown enough."""
        while not self._stop.wait(1.0):
            with self.cond:
                topics = list(self.topics.values())
            now = time.time()
            for topic in topics:
                try:
                    if self.fsync == "everysec":
                        topic.sync()
                    topic.trim(now)
                except OSError:
                    continue  # closed under us while the coordinator shuts down
            if self.positions is not None and self.positions.due:
                try:
                    self.backup()
                except MinipoolError as exc:  # the journal replays without it: try again later
                    log.warning("backup of the group positions failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=5)
        with self.cond:
            for topic in self.topics.values():
                topic.close()
            if self.positions is not None:
                self.positions.close()
