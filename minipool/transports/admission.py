"""Admission: how many connections a server lets sit in their opening, and which one goes.

Technique: *a bounded pool of unauthenticated connections, oldest evicted first* (what Bitcoin
nodes and SSH servers' ``MaxStartups`` do about connection floods). Until a peer has finished
its opening -- the transport's handshake (TLS, the HTTP pairing, the WebSocket upgrade) and
minipool's HMAC handshake -- it has proved nothing, and it costs the server a socket, a file
descriptor and a thread. A peer without the key could open a thousand connections and say
nothing: each would hold its resources until the handshake deadline, the server would run out
of descriptors (``accept`` fails with EMFILE under the usual ``ulimit -n`` of 1024) or of
connection slots, and real clients would wait in the kernel's backlog until the deadline.

So every server counts the connections still in their opening, and when one more arrives past
``limit``, it closes the one that has waited longest. Refusing the *newest* instead would hand
the server to whoever connects first and keeps the slots full; closing the oldest means a flood
of silent sockets churns through the limit while a real client, whose opening takes a few
round trips, gets through: it would need ``limit`` more connections to arrive during its own
opening to be evicted. A connection leaves the count when its opening ends, passed or failed.

The coordinator, the rpc daemon and the HTTP transport's listener each keep one
:class:`Admission`: one rule, in one place.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Protocol

__all__ = ["Admission", "MAX_OPENINGS"]

log = logging.getLogger("minipool.admission")

#: Connections a server lets sit in their opening at once before it closes the oldest.
MAX_OPENINGS = 64


class _Closable(Protocol):
    def close(self) -> None: ...


class Admission:
    """The connections of one server that are still in their opening, at most ``limit``.

    Args:
        limit: how many may be opening at once.
        server: named in the log line when one is evicted.
    """

    def __init__(self, limit: int = MAX_OPENINGS, server: str = "server") -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self.server = server
        self.evicted = 0
        self._opening: collections.OrderedDict[_Closable, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def admit(self, conn: _Closable) -> None:
        """Count ``conn`` as opening; past the limit, close the one that has waited longest."""
        with self._lock:
            self._opening[conn] = None
            oldest = self._opening.popitem(last=False)[0] if len(self._opening) > self.limit else None
            if oldest is not None:
                self.evicted += 1
                evicted = self.evicted
        if oldest is not None:
            if evicted == 1 or evicted % 100 == 0:  # a flood, not one line per socket
                log.warning(
                    "%s: more than %d connections opening at once; closing the oldest (%d so far)",
                    self.server,
                    self.limit,
                    evicted,
                )
            oldest.close()  # its opening fails in its own thread, which cleans up as usual

    def opened(self, conn: _Closable) -> None:
        """``conn``'s opening is over (passed or failed): it no longer counts."""
        with self._lock:
            self._opening.pop(conn, None)

    def __len__(self) -> int:
        return len(self._opening)
