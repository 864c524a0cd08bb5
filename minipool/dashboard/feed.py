"""The live feed's messages: what one page is sent, section by section, only when it changed.

Technique: *send the difference, and skip the work that cannot have changed*. The page keeps
what it was sent; each message carries only the sections whose JSON differs from the last one
this page received (the events and the chart's samples are sent from where the last message
stopped). The task tables -- the only sections whose making reads the ring of task leases and
asks the coordinator about unfinished tasks -- are made again only when the overview's counts
say something may have changed (a task submitted, leased, finished, a worker gone, an event,
an Effects folded by the history); an idle coordinator's page costs a few dictionary reads per
message. Everything goes through the API's ``call``, so a dashboard watching another process's
coordinator sends the same messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["Feed", "TASK_ROWS", "QUEUED_ROWS"]

#: Newest tasks the page shows, and the next queued ones.
TASK_ROWS = 50
QUEUED_ROWS = 20

#: Sections read every time: each is a few dictionary reads.
_CHEAP = (
    ("topics", "/api/topics"),
    ("pipesets", "/api/pipesets"),
    ("chaos", "/api/chaos"),
    ("journal", "/api/journal"),
)
_TABLES = (
    ("tasks", f"/api/tasks?limit={TASK_ROWS}"),
    ("queued", f"/api/tasks?state=queued&limit={QUEUED_ROWS}"),
)
#: Overview fields that move with time alone.
_CLOCKS = ("uptime",)


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class Feed:
    """One page's feed: :meth:`update` returns the next message's text, or None when nothing
    changed since the last one. ``call`` is the API's ``(method, target) -> (status, value)``."""

    def __init__(self, call: Callable[..., tuple[int, Any]]) -> None:
        self.call = call
        self.sent: dict[str, str] = {}  # section -> the JSON text the page has
        self.last_event = 0
        self.last_sample = 0.0
        self._counts: str | None = None

    def _get(self, target: str) -> Any:
        status, value = self.call("GET", target)
        return value if status == 200 else None

    def update(self) -> str | None:
        overview = self._get("/api/overview?workers=1") or {}
        workers = overview.pop("workers_list", [])
        for clock in _CLOCKS:  # (the page does not show it: an idle page is sent nothing)
            overview.pop(clock, None)
        sections: dict[str, Any] = {"overview": overview, "workers": workers}
        counts = _text(overview)
        if counts != self._counts or "tasks" not in self.sent:
            self._counts = counts
            for key, target in _TABLES:
                sections[key] = self._get(target)
        for key, target in _CHEAP:
            sections[key] = self._get(target)
        parts = []
        for key, value in sections.items():
            text = _text(value)
            if self.sent.get(key) != text:
                self.sent[key] = text
                parts.append(f'"{key}":{text}')
        events = self._get(f"/api/events?since={self.last_event}&limit=200") or []
        if events:
            self.last_event = max(e["seq"] for e in events)
            parts.append(f'"events":{_text(events)}')
        samples = [s for s in self._get("/api/series") or [] if s["time"] > self.last_sample]
        if samples:
            self.last_sample = samples[-1]["time"]
            parts.append(f'"series":{_text(samples)}')
        if not parts:
            return None
        return '{"type":"update",' + ",".join(parts) + "}"
