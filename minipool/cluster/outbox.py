"""The outbox: a connection's send queue, drained by whichever thread arrives first.

Technique: *flat combining*. Whichever thread finds the :class:`Outbox` idle becomes its sender
and drains everything the other threads queued meanwhile into one ``send_many``. Under load,
many messages leave in one syscall; when idle, a message leaves at once, with no extra thread
and no handoff. A peer that stops reading cannot make the outbox grow without bound: past
``limit`` queued bytes the connection is closed (Redis's client-output-buffer-limit). A
:class:`Batch` collects what a reader's burst of input produced, for one write per peer; a
:class:`Link` is the coordinator's handle on a remote peer: its connection and its outbox.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from ..errors import ConnectionClosed
from ..transports.base import Connection

__all__ = ["HOLD_MAX", "OUTBOX_LIMIT", "Batch", "Link", "Outbox"]

#: Bytes queued for a peer that is not reading before its connection is closed.
OUTBOX_LIMIT = 256 * 1024 * 1024
#: Messages held back with ``put(flush=False)`` before the outbox sends them anyway.
HOLD_MAX = 32


class Outbox:
    """A connection's send queue, drained by whichever thread arrives first.

    With ``writer=True`` a thread of its own drains it instead: the coordinator gives each
    remote *client* one, so that the reader of a worker, delivering that worker's results, can
    never be blocked by a client that has stopped reading.
    """

    __slots__ = (
        "conn",
        "limit",
        "pending_bytes",
        "last_send",
        "busy_since",
        "_pending",
        "_lock",
        "_flushing",
        "failed",
        "_wakeup",
        "_unsent",
    )

    def __init__(self, conn: Connection, limit: int = OUTBOX_LIMIT, *, writer: bool = False) -> None:
        self.conn = conn
        self.limit = limit
        self.pending_bytes = 0
        self.last_send = time.monotonic()
        self.busy_since: float | None = None  # set while a send is in progress (stall detection)
        self._pending: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        self._flushing = False
        self.failed = False
        self._unsent: list[bytes] = []  # what a failed send was carrying (see unsent)
        self._wakeup: threading.Event | None = None
        if writer:
            self._wakeup = threading.Event()
            threading.Thread(target=self._write_loop, daemon=True, name="minipool-writer").start()

    @property
    def has_pending(self) -> bool:
        """Whether messages are held back with no thread sending: a reader should flush them
        before it blocks. While another thread sends, it takes them along (it drains until
        nothing is queued), and a reader polling meanwhile would only spin: every poll gives up
        the GIL the sender needs to finish."""
        return bool(self._pending) and not self._flushing

    def put(self, data: bytes, *, flush: bool = True) -> None:
        """Queue ``data`` and send it (with anything queued) now, unless another thread is
        already sending, in which case that thread takes it along. ``flush=False`` holds it
        back for a later write, up to ``HOLD_MAX`` messages."""
        self._queue((data,), len(data), flush)

    def put_many(self, items: list[bytes]) -> None:
        """Queue several messages and send them together (see :meth:`put`)."""
        self._queue(items, sum(map(len, items)), True)

    def flush(self) -> None:
        """Send whatever :meth:`put` queued with ``flush=False``."""
        if self._pending:
            self._queue((), 0, True)

    def _queue(self, items: Any, size: int, flush: bool) -> None:
        with self._lock:
            if self.failed:
                return
            self._pending.extend(items)
            self.pending_bytes += size
            drain = False
            if self.pending_bytes > self.limit:
                self.failed = True
            elif (
                self._wakeup is None
                and not self._flushing
                and self._pending
                and (flush or len(self._pending) >= HOLD_MAX)
            ):
                self._flushing = drain = True  # this thread becomes the sender
        if self.failed:
            self.conn.close()  # a consumer this far behind is cut off; its reader cleans up
        elif self._wakeup is not None:
            self._wakeup.set()
        elif drain:
            self._drain()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._flushing = False
                    self.busy_since = None
                    return
                batch = list(self._pending)
                self._pending.clear()
                self.pending_bytes = 0
                self.busy_since = time.monotonic()
            try:
                self.conn.send_many(batch)
            except ConnectionClosed:
                with self._lock:
                    self.failed = True
                    self._flushing = False
                    self._unsent = batch + list(self._pending)
                    self._pending.clear()
                self.conn.close()
                return
            self.last_send = time.monotonic()

    def _write_loop(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        while not self.failed and not self.conn.closed:
            wakeup.wait(1.0)
            wakeup.clear()
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                self.pending_bytes = 0
                self.busy_since = time.monotonic() if batch else None
            if not batch:
                continue
            try:
                self.conn.send_many(batch)
            except ConnectionClosed:
                self.failed = True
                self.conn.close()
                return
            self.busy_since = None
            self.last_send = time.monotonic()

    def unsent(self) -> list[bytes]:
        """Once the connection is closed: the messages queued and never sent, or sent by a
        write that failed (some may have arrived). A worker keeps the results among them for
        its next connection."""
        with self._lock:
            items = [*self._unsent, *self._pending]
            self._unsent = []
            self._pending.clear()
            return items

    def try_put(self, data: bytes) -> None:
        """Send ``data`` only if that cannot block: nothing else queued or being sent, and the
        transport takes it without waiting. For heartbeats: a peer whose buffers are full is
        not reading, and a heartbeat would prove nothing to it."""
        with self._lock:
            if self.failed or self._flushing or self.busy_since is not None:
                return
            if self._pending:  # held-back messages: send them instead (a backstop)
                held = True
            else:
                held = False
                self._flushing = self._wakeup is None
        if held:
            self.flush()
            return
        try:
            if self.conn.try_send(data):
                self.last_send = time.monotonic()
        except ConnectionClosed:
            self.failed = True
            self.conn.close()
        finally:
            if self._wakeup is None:
                with self._lock:
                    self._flushing = False
                if self._pending:
                    self.flush()

    def stalled(self, now: float, limit: float) -> bool:
        """A send has been blocked for ``limit`` seconds: the peer is not reading."""
        busy = self.busy_since
        return busy is not None and now - busy > limit


class Batch:
    """Messages produced while handling a burst of input, sent together when the burst ends.

    A reader that finds several messages already buffered handles them all, collecting what
    they produce here, and only then writes: one syscall per peer per burst, not per message.
    """

    __slots__ = ("_items", "count")

    def __init__(self) -> None:
        self._items: dict[Outbox, list[bytes]] = {}
        self.count = 0

    def add(self, outbox: Outbox, data: bytes) -> None:
        items = self._items.get(outbox)
        if items is None:
            self._items[outbox] = [data]
        else:
            items.append(data)
        self.count += 1

    def flush(self) -> None:
        items, self._items = self._items, {}
        self.count = 0
        for outbox, data in items.items():
            outbox.put_many(data)


class Link:
    """A remote peer's connection and its outbox: the handle the coordinator's state keeps for
    a peer (:class:`minipool.cluster.state.Link`) without knowing what it is."""

    __slots__ = ("conn", "outbox")

    def __init__(self, conn: Connection, outbox: Outbox) -> None:
        self.conn = conn
        self.outbox = outbox

    @property
    def peer(self) -> str:
        return self.conn.peer

    def close(self) -> None:
        self.conn.close()
