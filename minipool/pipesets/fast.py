"""Fast pipes: records pushed from one pipe set's instance straight to another's, not through
the centre, and not kept anywhere (seed 001's open problem 2).

Technique: *trade durability for a hop*. The paper moves every record pipe -> exchange channel
-> global centre -> exchange channel -> pipe, and proposes a "fast pipe" where exchange is
frequent and each record cheap: pipes talk directly, "at the cost of disaster tolerance". Here
an instance whose input is a fast pipe serves an :class:`Inlet` over :mod:`minipool.rpc` (any
transport, the pool's HMAC handshake, so a stranger cannot push records into it) and registers
it as service ``fast:CHANNEL``; a producing instance's :class:`Outlet` finds the inlets in the
registry and pushes each batch to the next one, round-robin.

What that costs, plainly: an inlet holds pushed records in memory only. The producing instance
acknowledges its own inputs once the inlet has *accepted* a batch, so records accepted but not
yet processed when the consuming instance dies are lost, and nobody resends them. The memory is
bounded: an inlet holds at most ``capacity`` batches, and a push into a full one waits
(backpressure over the connection). When no inlet is registered (the consuming set is gone),
the outlet holds its one batch and asks the registry again every ``RETRY`` seconds: the
producing instance stops pulling, so its own input waits, durably, in its exchange channel.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from typing import Any

from ..errors import MinipoolError
from ..rpc import Daemon, Proxy, expose

__all__ = ["Inlet", "Outlet", "service_of", "RETRY"]

log = logging.getLogger("minipool.pipesets")

#: Seconds between two registry lookups while no inlet of a fast pipe is registered.
RETRY = 0.1


def service_of(channel: str) -> str:
    """The registry service of a fast pipe's inlets."""
    return f"fast:{channel}"


class Inlet:
    """The receiving end of a fast pipe, served at ``url`` (any transport).

    Args:
        capacity: batches held before a push waits.
    """

    def __init__(self, url: str, authkey: bytes | str | None, capacity: int = 8, **options: Any) -> None:
        self.batches: queue.Queue[list[bytes]] = queue.Queue(capacity)
        self.accepted = 0  # records
        self.daemon = Daemon(url, authkey=authkey, **options)
        self.uri = self.daemon.register(self, "inlet")
        self.daemon.start()

    @expose
    def push(self, values: list[bytes]) -> int:
        """Accept a batch (waiting while the inlet is full); how many records it held."""
        self.batches.put(list(values))
        self.accepted += len(values)
        return len(values)

    def take(self, timeout: float) -> list[bytes]:
        """The next batch pushed, or ``[]`` after ``timeout`` seconds."""
        try:
            return self.batches.get(timeout=timeout)
        except queue.Empty:
            return []

    def close(self) -> None:
        self.daemon.close()


class Outlet:
    """The sending end of a fast pipe: pushes batches to the registered inlets, in turn.

    Args:
        channel: the fast pipe's name.
        lookup: ``lookup(service)``, the registry's live entries (a client's).
        stopping: set when the instance stops (a push waiting for an inlet gives up).
    """

    def __init__(
        self,
        channel: str,
        lookup: Any,
        authkey: bytes | str | None,
        stopping: threading.Event,
        **options: Any,
    ) -> None:
        self.channel = channel
        self._lookup = lookup
        self._key = authkey
        self._options = options
        self._stopping = stopping
        self._proxies: dict[str, Proxy] = {}
        self._turn = itertools.count()
        self.pushed = 0  # records accepted by an inlet
        self.resent = 0  # records pushed again after an inlet failed
        self.held = 0.0  # seconds spent with no inlet to push to

    def _inlets(self) -> list[str]:
        return sorted(str(e["address"]) for e in self._lookup(service_of(self.channel)))

    def push(self, values: list[bytes]) -> bool:
        """Push ``values`` to one inlet; wait (holding them) while there is none. False if the
        instance stopped first."""
        waited_from = None
        while not self._stopping.is_set():
            inlets = self._inlets()
            if not inlets:
                waited_from = waited_from or time.monotonic()
                self._stopping.wait(RETRY)
                continue
            uri = inlets[next(self._turn) % len(inlets)]
            proxy = self._proxies.get(uri)
            if proxy is None:
                proxy = self._proxies[uri] = Proxy(uri, authkey=self._key, timeout=60.0, **self._options)
            try:
                proxy.push(values)
            except (MinipoolError, OSError, TimeoutError) as exc:
                log.info("fast pipe %s: inlet %s failed (%s); trying another", self.channel, uri, exc)
                self._proxies.pop(uri).__exit__(None, None, None)
                self.resent += len(values)
                self._stopping.wait(RETRY)
                continue
            if waited_from is not None:
                self.held += time.monotonic() - waited_from
            self.pushed += len(values)
            return True
        return False

    def close(self) -> None:
        for proxy in self._proxies.values():
            proxy.__exit__(None, None, None)  # closes its connection
        self._proxies.clear()
