"""A pipe set's step: a batch's outputs appended and its inputs acknowledged as one, even
across a crash of the coordinator.

Technique: *consume-transform-produce as one atomic step* (Kafka's transactions), made atomic on
disk by *a write-ahead record* (:mod:`.positions`). Under the service's lock, the step:

1. waits for room in capped channels (:mod:`.room`), and refuses the inputs another taker
   already settled (:meth:`~.groups.Group.settled`) -- which is also how a step *resent* after a
   lost reply or a reconnect is recognised as done: its inputs are acknowledged already, or,
   after a restart, no longer handed out;
2. locks its output topics (in name order, so two steps never wait for each other), places the
   outputs and notes where each run of them will land;
3. journals one record: the positions the group moves to and those places;
4. writes the outputs to the segments, and only then moves the group in memory.

A crash before 3 leaves nothing; after 4 leaves a complete step; in between, recovery finds a
last record whose outputs are missing or torn, cuts them off and forgets the record. A write
that fails (a full disk) is cut off at once and the old positions journaled after the record,
so the step is refused as a whole with the error.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import TopicError
from .groups import Group
from .positions import Positions
from .records import Buffer, check_acks, check_count, unpack_entries
from .room import wait_for_room
from .topic import Topic

__all__ = ["transact"]

Entries = list[tuple[Buffer | None, Buffer]]


def transact(service: Any, request: dict[str, Any], body: bytes) -> dict[str, Any]:
    """Apply the step ``request`` asks for (see :meth:`~.service.TopicService.transact`)."""
    source = service.topic(request.get("topic"), create=False)
    acks = check_acks(request.get("acks", []))
    entries = unpack_entries(body)
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list) or sum(check_count(n, "count", 0, 1 << 30) for _, n in outputs) != len(
        entries
    ):
        raise TopicError("outputs must be [topic, count] pairs that add up to the records sent")
    service.check_sizes(entries)
    batches: dict[str, Entries] = {}
    at = 0
    for name, count in outputs:
        batches.setdefault(service.topic(name).name, []).extend(entries[at : at + count])
        at += count
    with service.cond:
        full = wait_for_room(service, request, outputs)
        group = service.groups.get((source.name, str(request.get("group"))))
        if group is None:
            raise TopicError(f"no group {request.get('group')!r} on topic {source.name!r}")
        done = group.settled(acks)
        if done or full:
            return {"done": done, "appended": 0, "full": full}
        targets = {name: service.topics[name] for name in batches if batches[name]}
        _apply(service.positions, source.name, group, acks, targets, batches)
        if service.fsync == "always":
            for topic in targets.values():
                topic.sync()
        group.ack(acks)
        service.cond.notify_all()  # consumers of the outputs, and capped steps (room.py)
    return {"done": [], "appended": len(entries), "full": None}


def _apply(
    positions: Positions | None,
    source: str,
    group: Group,
    acks: list[tuple[int, int, int]],
    targets: dict[str, Topic],
    batches: dict[str, Entries],
) -> None:
    """Steps 2-4 but the move in memory: journal the step, then write its outputs."""
    with contextlib.ExitStack() as locked:
        for name in sorted(targets):
            locked.enter_context(targets[name].lock)
        placed = {name: topic.place(batches[name]) for name, topic in targets.items()}
        out = [
            (name, p, targets[name].partitions[p].end, len(indexes))
            for name, where in placed.items()
            for p, indexes in where.items()
        ]
        if positions is not None:
            positions.step(source, group, acks, out)
        try:
            for name, topic in targets.items():
                topic.write(batches[name], placed[name])
        except OSError:
            for name, p, first, _ in out:
                targets[name].partitions[p].cut(first)
            if positions is not None:  # the step's record is void: the positions it did not move
                positions.commit(
                    source, group, sorted({p for p, _, _ in acks if 0 <= p < len(group.cursors)})
                )
            raise
