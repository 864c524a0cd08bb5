"""Watching a coordinator from another process, over its normal authenticated connection.

Technique: *the same API, one hop further*. A :class:`RemoteBackend` is a monitoring client
(the coordinator does not count it among its clients) that forwards each API call as one
DASHBOARD message (wire kind 70) and gets the coordinator's own answer back (71), JSON both
ways. So ``python -m minipool dashboard URL`` serves the same page, API and ``/metrics`` as
the coordinator's own ``--dashboard``, from anywhere the authkey reaches -- with the same
token rules on its own port, and nothing unpickled on either side.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..client import RemoteClient
from ..errors import MinipoolError
from ..wire import Kind

__all__ = ["RemoteBackend", "POLL"]

#: Seconds between two looks for the live feed (well inside the page's one-second promise).
POLL = 0.5


class _Watcher(RemoteClient):
    """A client that only looks: not counted among the coordinator's clients."""

    def hello(self) -> dict[str, Any]:
        return {**super().hello(), "monitor": True}


class RemoteBackend:
    """The dashboard API of the coordinator at ``url``, called over the wire."""

    def __init__(self, url: str, authkey: bytes, timeout: float = 10.0, **transport_options: Any) -> None:
        self.client = _Watcher(url, authkey, timeout=timeout, **transport_options)
        self.timeout = timeout
        self._tick = threading.Event()

    def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
        try:
            headers = {"method": method, "target": target}
            reply = self.client.request(Kind.DASHBOARD, headers, self.timeout, body)
        except (MinipoolError, OSError, TimeoutError) as exc:
            return 502, {"error": f"the coordinator did not answer: {exc}"}
        return int(reply.get("status", 502)), reply.get("value")

    def metrics(self) -> str:
        status, value = self.call("GET", "/metrics")
        return (
            value
            if status == 200 and isinstance(value, str)
            else f"# coordinator unreachable: {json.dumps(value)}\n"
        )

    def wait(self, version: int, timeout: float) -> int:
        self._tick.wait(min(timeout, POLL))
        return version + 1

    def close(self) -> None:
        self._tick.set()
        self.client.close()
