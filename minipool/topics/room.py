"""Room in a channel: a capped step waits until its outputs fit (seed 001's open problem 1).

Technique: *backpressure across processes, woken by a notification*. Seed 001 notes that when
every pipe of one kind disconnects, data piles up in the global centre until it overflows, and
proposes a cap on what each pipe set may push into the centre, with a notification that wakes
the pipes. Here a step (:meth:`~.service.TopicService.transact`) may name a cap per output
channel: the most records that may wait there for the channel's slowest consumer group (or, with
no group yet, the most it may hold). A step whose outputs do not fit waits on the service's
condition -- notified by every append and every acknowledgement -- for at most ``wait``
seconds, then is refused with ``full``; nothing of it is applied, so its sender still holds its
inputs and pulls no more. The centre's memory and disk stay bounded by the cap; a consumer that
comes back and acknowledges wakes the held producers at once, with no one polling the centre.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import TopicError

__all__ = ["backlog", "wait_for_room", "MAX_WAIT"]

#: The longest a step waits for room before it is refused (its sender then asks again).
MAX_WAIT = 5.0


def backlog(service: Any, name: str) -> int:
    """Records of topic ``name`` not yet acknowledged by its slowest group (all it holds while
    it has no group)."""
    topic = service.topics.get(name)
    if topic is None:
        return 0
    bounds = topic.bounds()
    groups = [g for (t, _), g in service.groups.items() if t == name]
    if not groups:
        return sum(end - start for start, end in bounds)
    return max(sum(end - c.committed for (_, end), c in zip(bounds, g.cursors, strict=True)) for g in groups)


def wait_for_room(service: Any, request: dict[str, Any], outputs: list[tuple[str, int]]) -> str | None:
    """Wait (under ``service.cond``) until every capped output fits; the channel that is still
    full when ``wait`` runs out, or None. A channel with nothing waiting takes any batch.

    Raises:
        TopicError: ``caps`` is not a map of channel names to positive integers.
    """
    caps = request.get("caps") or {}
    if not isinstance(caps, dict) or not all(type(c) is int and c > 0 for c in caps.values()):
        raise TopicError("caps must map channels to positive numbers of records")
    deadline = time.monotonic() + min(max(0.0, float(request.get("wait", 0.0))), MAX_WAIT)
    while True:
        full = None
        for name, count in outputs:
            if name in caps:
                held = backlog(service, name)
                if held and held + count > caps[name]:
                    full = name
                    break
        left = deadline - time.monotonic()
        if full is None or left <= 0:
            return full
        service.waiting_for_room += 1
        try:
            service.cond.wait(left)
        finally:
            service.waiting_for_room -= 1
