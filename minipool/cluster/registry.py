"""A service registry with time-to-live: the Consul / etcd pattern, without any I/O.

Technique (seed 001's service registry, seed 000 §2.1's service discovery): every worker, and
every pipeline stage run as a service, *registers* under a key with its address, the services it
offers and its free slots, and promises to *renew* the entry before its time-to-live runs out
(a heartbeat). Nobody has to notice a crash: an entry that stops renewing simply expires, and
whoever calls ``expire()`` (the coordinator, periodically) learns which members are gone and
requeues their work. Clients find members with ``lookup(service)``.

Why sans-I/O: the registry is a dictionary and a clock. It never sleeps, never starts a thread
and never touches a socket, so the coordinator can call it from its event loop and the tests
can drive time with a fake clock instead of waiting for real seconds to pass. An entry past its
deadline is invisible to ``lookup`` even before ``expire()`` has removed it, so a slow sweep
never hands out a dead address.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Entry", "Registry"]


@dataclass(frozen=True)
class Entry:
    """One registered member: who it is, where to reach it, what it offers, until when.

    Times are readings of the registry's clock (monotonic seconds by default), not wall time.
    """

    key: str
    address: str
    services: tuple[str, ...] = ()
    slots: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)
    registered_at: float = 0.0
    expires_at: float = 0.0
    ttl: float = 0.0

    def alive(self, now: float) -> bool:
        """Whether the entry has not yet expired at clock reading ``now``."""
        return now < self.expires_at

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """A JSON-able dict for ``status --json``; with ``now``, also the seconds left to live."""
        data: dict[str, Any] = {
            "key": self.key,
            "address": self.address,
            "services": list(self.services),
            "slots": self.slots,
            "meta": dict(self.meta),
            "registered_at": self.registered_at,
            "expires_at": self.expires_at,
            "ttl": self.ttl,
        }
        if now is not None:
            data["expires_in"] = max(0.0, self.expires_at - now)
        return data


class Registry:
    """Members keyed by name, each alive until its time-to-live runs out unless renewed.

    Args:
        clock: returns the current time in seconds; inject a fake one in tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        key: str,
        *,
        address: str,
        services: Iterable[str] = (),
        slots: int = 0,
        meta: Mapping[str, Any] | None = None,
        ttl: float,
    ) -> Entry:
        """Add a member, or replace the member of the same key (a restarted worker).

        Args:
            key: the member's unique name (a worker id, a stage instance).
            address: how to reach it, e.g. ``"tcp://10.0.0.5:7000"``.
            services: the service names it offers; ``lookup`` finds it by any of them.
            slots: how many tasks it can run at once.
            meta: free-form JSON-able details (pid, host, version).
            ttl: seconds it stays alive without a ``renew``.

        Raises:
            ValueError: ``ttl`` is not positive, ``slots`` is negative or ``key`` is empty.
        """
        if not key:
            raise ValueError("a registry key must not be empty")
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        if slots < 0:
            raise ValueError(f"slots must not be negative, got {slots!r}")
        now = self._clock()
        entry = Entry(
            key=key,
            address=address,
            services=tuple(services),
            slots=slots,
            meta=dict(meta or {}),
            registered_at=now,
            expires_at=now + ttl,
            ttl=ttl,
        )
        self._entries[key] = entry
        return entry

    def renew(self, key: str, ttl: float | None = None) -> bool:
        """Extend a live member's life by ``ttl`` (default: the ttl it registered with).

        Returns ``False`` when the key is unknown or has already expired: as with Consul's
        sessions, an expired member must register again (its work has been given away).

        Raises:
            ValueError: ``ttl`` is given and not positive.
        """
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        entry = self._entries.get(key)
        now = self._clock()
        if entry is None or not entry.alive(now):
            return False
        ttl = entry.ttl if ttl is None else ttl
        self._entries[key] = replace(entry, expires_at=now + ttl, ttl=ttl)
        return True

    def update(
        self, key: str, *, slots: int | None = None, meta: Mapping[str, Any] | None = None
    ) -> Entry | None:
        """Change a live member's advertised slots or meta without renewing it."""
        entry = self.get(key)
        if entry is None:
            return None
        changes: dict[str, Any] = {}
        if slots is not None:
            changes["slots"] = slots
        if meta is not None:
            changes["meta"] = dict(meta)
        self._entries[key] = entry = replace(entry, **changes)
        return entry

    def deregister(self, key: str) -> Entry | None:
        """Remove a member that leaves politely; return its entry, or ``None`` if unknown."""
        return self._entries.pop(key, None)

    def get(self, key: str) -> Entry | None:
        """The live entry under ``key``, or ``None`` (unknown or expired)."""
        entry = self._entries.get(key)
        return entry if entry is not None and entry.alive(self._clock()) else None

    def lookup(self, service: str) -> list[Entry]:
        """The live members offering ``service``, in registration order."""
        now = self._clock()
        return [e for e in self._entries.values() if service in e.services and e.alive(now)]

    def entries(self) -> list[Entry]:
        """Every live member, in registration order."""
        now = self._clock()
        return [e for e in self._entries.values() if e.alive(now)]

    def expire(self) -> list[Entry]:
        """Remove and return the members whose time-to-live has run out.

        The caller requeues whatever those members had leased; each expired entry is
        returned exactly once.
        """
        now = self._clock()
        gone = [e for e in self._entries.values() if not e.alive(now)]
        for entry in gone:
            del self._entries[entry.key]
        return gone

    def next_expiry(self) -> float | None:
        """The clock reading at which the next member expires (when to sweep next), if any."""
        return min((e.expires_at for e in self._entries.values()), default=None)

    def to_json(self) -> list[dict[str, Any]]:
        """Every live entry as JSON-able dicts, for ``status --json``."""
        now = self._clock()
        return [e.to_json(now) for e in self._entries.values() if e.alive(now)]

    def __len__(self) -> int:
        return len(self.entries())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None
