"""Consumer groups as data: who is in a group, which partitions each member owns, which
records each member holds unacknowledged, and how far the group has committed. Sans-I/O.

Technique: *Kafka's partition assignment with Redis Streams' pending entries list*. Each
partition of the topic is owned by one member (assigned round-robin over the members in the
order they joined, re-assigned whenever one joins or leaves), so the records of one key reach
one member in order. Within a partition the group keeps, like ``XREADGROUP``/``XACK``/
``XPENDING``:

* ``committed``: every record below it is acknowledged (what survives a coordinator restart);
* ``next``: the first record never delivered;
* ``pending``: delivered but not yet acknowledged, offset -> member;
* ``acked``: acknowledged out of order, above ``committed``;
* ``redeliver``: pending records whose member died or left, for the partition's next owner.

A member holds at most ``max_pending`` records per partition, so a group that falls behind,
or a member that never acknowledges, costs the coordinator a bounded amount of memory: the
records wait on disk, not in the group. Nothing here reads a record or a clock; the caller
reads what :meth:`Group.plan` asks for and reports it back with :meth:`Group.delivered`.

A group can be *balanced by pull time* (seed 001's dynamic balancing: the exchange channel
tracks how long each pipe takes to pull again and gives the slow ones smaller weights). The
caller reports when it hands a member records (:meth:`handed`) and when that member pulls next
(:meth:`pulled`); the seconds per record between the two, smoothed, make the member's weight
(records per second, relative to the others; the caller reports full pulls only, since a
member handed fewer records than it asked for was waiting for the producer, and its time per
record would count the round trip many times), and partitions are shared out in proportion to
the weights (at least one each, so every member keeps being measured), re-assigned at most once
per ``REBALANCE_EVERY`` seconds of the caller's clock.
"""

from __future__ import annotations

import bisect
from typing import Any

__all__ = ["Cursor", "Group", "MAX_PENDING"]

#: Records a member may hold unacknowledged per partition before it is sent no more.
MAX_PENDING = 10_000
#: Seconds of the caller's clock between two re-assignments of a group balanced by pull time.
REBALANCE_EVERY = 1.0
_ALPHA = 0.3  # smoothing of a member's seconds per record: one slow pull does not flip it


def _moves(held: int, share: int) -> bool:
    """Whether a member holding ``held`` partitions should be dealt ``share`` instead: by two
    or more, or by half what it holds. Smaller changes are noise in the measured times, and
    every move costs the partition its order (the new owner starts while the old one still
    holds records of it)."""
    return abs(held - share) >= 2 or abs(held - share) * 2 >= max(1, held)


class Cursor:
    """A group's position in one partition."""

    __slots__ = ("committed", "next", "pending", "acked", "redeliver")

    def __init__(self, offset: int) -> None:
        self.committed = offset
        self.next = offset
        self.pending: dict[int, str] = {}
        self.acked: set[int] = set()
        self.redeliver: list[int] = []  # sorted

    def move_to(self, offset: int) -> None:
        self.committed = self.next = offset
        self.pending.clear()
        self.acked.clear()
        self.redeliver.clear()

    def resume(self, acked: set[int]) -> None:
        """Start again after a restart with ``acked`` acknowledged above ``committed``: the
        records between them go out again, those acknowledged never."""
        above = {o for o in acked if o > self.committed}
        if above:
            self.acked = above
            self.next = max(above) + 1
            self.redeliver = [o for o in range(self.committed, self.next) if o not in above]

    def advance(self) -> bool:
        """Move ``committed`` over acknowledged records; True if it moved."""
        start = self.committed
        while self.committed in self.acked:
            self.acked.discard(self.committed)
            self.committed += 1
        if self.committed == self.next and self.acked:  # acks from before a seek
            self.acked.clear()
        return self.committed != start

    def skip_to(self, start: int) -> int:
        """Forget records below ``start`` (deleted by retention); how many were undelivered
        or unacknowledged."""
        if self.committed >= start:
            return 0
        lost = max(0, start - self.next) + sum(1 for o in self.pending if o < start)
        lost += sum(1 for o in self.redeliver if o < start)
        for offset in [o for o in self.pending if o < start]:
            del self.pending[offset]
        self.acked = {o for o in self.acked if o >= start}
        self.redeliver = [o for o in self.redeliver if o >= start]
        self.committed = start
        self.next = max(self.next, start)
        self.advance()
        return lost


class Group:
    """One consumer group of one topic.

    Args:
        name: the group's name.
        positions: the committed offset of each partition.
        max_pending: see :data:`MAX_PENDING`.
    """

    def __init__(self, name: str, positions: list[int], max_pending: int = MAX_PENDING) -> None:
        self.name = name
        self.cursors = [Cursor(offset) for offset in positions]
        self.members: dict[str, list[int]] = {}  # member -> its partitions, in join order
        self.max_pending = max_pending
        self.lost = 0  # records deleted by retention before the group acknowledged them
        self.redelivered = 0
        self.turn = 0
        self.balanced = False  # by pull time (see the module's docstring), else round-robin
        self.pull_times: dict[str, float] = {}  # member -> seconds per record, smoothed
        self._handed: dict[str, tuple[float, int]] = {}  # member -> (when, how many records)
        self._assigned_at = float("-inf")
        self.rebalanced = 0

    # -- membership ---------------------------------------------------------------------------

    def join(self, member: str) -> bool:
        """Add ``member`` (True if it is new) and re-assign the partitions."""
        if member in self.members:
            return False
        self.members[member] = []
        self._assign()
        return True

    def leave(self, member: str) -> int:
        """Remove ``member``: its pending records go to the partitions' next owners. Returns
        how many it held."""
        if self.members.pop(member, None) is None:
            return 0
        held = 0
        for cursor in self.cursors:
            mine = [o for o, m in cursor.pending.items() if m == member]
            for offset in mine:
                del cursor.pending[offset]
                bisect.insort(cursor.redeliver, offset)
            held += len(mine)
        self.redelivered += held
        self.pull_times.pop(member, None)
        self._handed.pop(member, None)
        self._assign()
        return held

    def _assign(self) -> None:
        names = list(self.members)
        for owned in self.members.values():
            owned.clear()
        if not names:
            return
        counts = self._shares(names) if self.balanced else None
        if counts is None:
            for partition in range(len(self.cursors)):
                self.members[names[partition % len(names)]].append(partition)
            return
        partition = 0
        for name, count in zip(names, counts, strict=True):
            self.members[name].extend(range(partition, partition + count))
            partition += count

    def _shares(self, names: list[str]) -> list[int] | None:
        """Partitions per member in proportion to its weight (largest remainder, at least one
        each while there are enough); None while the weights are all even."""
        weights = [self.weight(name) for name in names]
        total, partitions = sum(weights), len(self.cursors)
        if partitions < len(names) or max(weights) - min(weights) < 1e-9:
            return None
        spare = partitions - len(names)
        exact = [spare * w / total for w in weights]
        counts = [1 + int(e) for e in exact]
        by_remainder = sorted(range(len(names)), key=lambda i: int(exact[i]) - exact[i])
        for i in by_remainder[: partitions - sum(counts)]:
            counts[i] += 1
        return counts

    def weight(self, member: str) -> float:
        """``member``'s records per second relative to the group's mean (1.0: average, or not
        yet measured)."""
        rates = {m: 1.0 / t for m, t in self.pull_times.items() if m in self.members and t > 0}
        if member not in rates:
            return 1.0
        return rates[member] / (sum(rates.values()) / len(rates))

    def handed(self, member: str, count: int, now: float) -> None:
        """``member`` was handed ``count`` records at ``now`` (a group balanced by pull time)."""
        if count:
            self._handed[member] = (now, count)

    def pulled(self, member: str, now: float) -> None:
        """``member`` pulls again at ``now``: the time since its last records were handed to it,
        per record, is its pull time; re-assign the partitions if it is time to."""
        handed = self._handed.pop(member, None)
        if handed is None:
            return
        seconds = (now - handed[0]) / handed[1]
        before = self.pull_times.get(member)
        self.pull_times[member] = seconds if before is None else _ALPHA * seconds + (1 - _ALPHA) * before
        if now - self._assigned_at >= REBALANCE_EVERY:
            self._assigned_at = now
            names = list(self.members)
            shares = self._shares(names) or [len(self.members[n]) for n in names]
            if any(_moves(len(self.members[n]), share) for n, share in zip(names, shares, strict=True)):
                self._assign()
                self.rebalanced += 1

    def owner(self, partition: int) -> str | None:
        for member, owned in self.members.items():
            if partition in owned:
                return member
        return None

    # -- delivery ------------------------------------------------------------------------------

    def plan(self, member: str, ends: list[int], limit: int) -> list[tuple[int, list[int] | None, int, int]]:
        """What ``member`` should be sent next, at most ``limit`` records: a list of
        ``(partition, offsets to redeliver or None, first new offset, how many new)``."""
        plan = []
        owned = self.members.get(member, [])
        self.turn += 1  # start at another partition each time: a backlog in one starves none
        for partition in owned[self.turn % len(owned) :] + owned[: self.turn % len(owned)] if owned else ():
            if limit <= 0:
                break
            cursor = self.cursors[partition]
            held = 0
            if len(cursor.pending) + limit > self.max_pending:  # else no need to count
                held = sum(1 for m in cursor.pending.values() if m == member)
            room = min(limit, self.max_pending - held)
            if room <= 0:
                continue
            again = cursor.redeliver[:room] or None
            room -= len(again or ())
            new = max(0, min(room, ends[partition] - cursor.next))
            if again or new:
                plan.append((partition, again, cursor.next, new))
                limit -= len(again or ()) + new
        return plan

    def delivered(self, member: str, partition: int, offsets: list[int], gone: list[int]) -> None:
        """``offsets`` of ``partition`` were sent to ``member``; ``gone`` were planned but had
        been deleted by retention."""
        cursor = self.cursors[partition]
        if not cursor.redeliver and offsets and offsets[0] == cursor.next:  # new records only
            cursor.pending.update(dict.fromkeys(offsets, member))
            cursor.next = offsets[-1] + 1
            offsets = []
        for offset in offsets:
            cursor.pending[offset] = member
            if cursor.redeliver and cursor.redeliver[0] <= offset:
                at = bisect.bisect_left(cursor.redeliver, offset)
                if at < len(cursor.redeliver) and cursor.redeliver[at] == offset:
                    del cursor.redeliver[at]
            if offset >= cursor.next:
                cursor.next = offset + 1
        for offset in gone:
            at = bisect.bisect_left(cursor.redeliver, offset)
            if at < len(cursor.redeliver) and cursor.redeliver[at] == offset:
                del cursor.redeliver[at]
            cursor.acked.add(offset)
            self.lost += 1
        cursor.advance()

    def ack(self, acks: list[tuple[int, int, int]]) -> set[int]:
        """Acknowledge ``(partition, first, end)`` ranges of offsets (from any member: a record
        is done once); return the partitions whose committed offset moved."""
        moved = set()
        for partition, first, end in acks:
            if not 0 <= partition < len(self.cursors):
                continue
            cursor = self.cursors[partition]
            first, end = max(first, cursor.committed), min(end, cursor.next)  # the rest: done
            if first >= end:  # already, or from before a seek
                continue
            pending, before = cursor.pending, cursor.committed
            if (
                first == before
                and end == cursor.next
                and not cursor.redeliver
                and len(pending) == end - first
            ):
                pending.clear()  # the common case: everything out is back, in order
                cursor.acked.clear()
                cursor.committed = end
            else:
                for offset in range(first, end):
                    pending.pop(offset, None)
                if cursor.redeliver:
                    cursor.redeliver = [o for o in cursor.redeliver if not first <= o < end]
                cursor.acked.update(range(first, end))
                cursor.advance()
            if cursor.committed != before:
                moved.add(partition)
        return moved

    def committed_after(self, acks: list[tuple[int, int, int]]) -> dict[int, int]:
        """The committed offset each partition that ``acks`` name would have once :meth:`ack`
        took them; nothing changes (a step journals it before it applies it)."""
        spans: dict[int, list[tuple[int, int]]] = {}
        for partition, first, end in acks:
            if 0 <= partition < len(self.cursors):
                spans.setdefault(partition, []).append((first, end))
        after = {}
        for partition, ranges in spans.items():
            cursor = self.cursors[partition]
            at = cursor.committed
            for first, end in sorted(ranges):
                while at in cursor.acked:
                    at += 1
                if first <= at < min(end, cursor.next):
                    at = min(end, cursor.next)
            while at in cursor.acked:
                at += 1
            after[partition] = at
        return after

    def settled(self, acks: list[tuple[int, int, int]]) -> list[list[int]]:
        """The parts of ``(partition, first, end)`` ranges that cannot be acknowledged as a
        new step: already acknowledged (by this member or another) or never delivered."""
        done: list[list[int]] = []
        for partition, first, end in acks:
            if not 0 <= partition < len(self.cursors):
                done.append([partition, first, end])
                continue
            cursor = self.cursors[partition]
            for offset in range(first, end):
                if offset < cursor.committed or offset in cursor.acked or offset >= cursor.next:
                    if done and done[-1][0] == partition and done[-1][2] == offset:
                        done[-1][2] += 1
                    else:
                        done.append([partition, offset, offset + 1])
        return done

    def skip_dropped(self, starts: list[int]) -> None:
        """Move past records that retention deleted before the group got to them."""
        for cursor, start in zip(self.cursors, starts, strict=True):
            self.lost += cursor.skip_to(start)

    def describe(self, ends: list[int]) -> dict[str, Any]:
        partitions = [
            {
                "partition": p,
                "committed": c.committed,
                "next": c.next,
                "pending": len(c.pending) + len(c.redeliver),
                "lag": ends[p] - c.committed,
                "owner": self.owner(p),
            }
            for p, c in enumerate(self.cursors)
        ]
        members = [
            {
                "member": m,
                "partitions": list(owned),
                "pending": sum(1 for c in self.cursors for holder in c.pending.values() if holder == m),
                "weight": round(self.weight(m), 3),
                "seconds_per_record": self.pull_times.get(m),
            }
            for m, owned in self.members.items()
        ]
        return {
            "name": self.name,
            "members": members,
            "partitions": partitions,
            "lag": sum(p["lag"] for p in partitions),
            "lost": self.lost,
            "redelivered": self.redelivered,
            "balance": "pull-time" if self.balanced else "round-robin",
            "rebalanced": self.rebalanced,
        }
