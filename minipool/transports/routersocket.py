"""A server's ROUTER shared by its threads: the leader waits in ``recv``, woken by a message.

Technique: *a wake-up that is a message*. The leader of a :class:`RouterSocket` waits inside
ZeroMQ, in a blocking ``recv`` with the GIL released, as a raw REP server does (``zmq_poll``
would cost a few more syscalls per message). To wake it, the hub connects an in-process
DEALER to its own ROUTER and ``wake`` sends an empty frame through it, under a random identity
no remote peer can take over (a ROUTER refuses a second peer with an identity in use). A ROUTER
routes what it sends by identity, so this waker never receives anything. A wait with a deadline
polls the ROUTER instead. The leader/followers core is :mod:`~minipool.transports.sharedsocket`;
docs/zeromq.md has the reasons and the measurements.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from typing import Any

from .sharedsocket import BATCH, Inbox, SharedSocket

__all__ = ["RouterSocket"]


class RouterSocket(SharedSocket):
    """A ROUTER socket used by a listener's accept thread and its connection threads.

    Every message starts with the identity of its peer; :attr:`routes` maps identities to
    their connections' inboxes, and a send to an identity that is gone calls
    :attr:`on_unroutable` (the socket has ``ROUTER_MANDATORY`` on).
    """

    def __init__(self, zmq: Any, sock: Any, dispatch: Callable[[list[bytes]], None]) -> None:
        super().__init__(zmq, sock, dispatch)
        # An in-process DEALER, connected to the ROUTER, that only ever sends an empty frame
        # under an identity no peer can guess (see the module docstring).
        self._waker_id = f"minipool-wake-{os.urandom(8).hex()}".encode()
        endpoint = f"inproc://{self._waker_id.decode()}"
        sock.bind(endpoint)
        waker = sock.context.socket(zmq.DEALER)
        waker.setsockopt(zmq.ROUTING_ID, self._waker_id)
        waker.setsockopt(zmq.SNDHWM, 0)
        waker.setsockopt(zmq.LINGER, 0)
        waker.connect(endpoint)
        self._waker: Any = waker
        # Reentrant: a signal handler may close (and so wake) while its thread is waking.
        self._waker_lock = threading.RLock()

    def wake(self) -> None:
        with self._waker_lock:
            if self._waker is not None:
                try:
                    self._waker.send(b"", self._noblock)
                except self.zmq.ZMQError:  # the ROUTER is closing
                    pass

    def _send_failed(self, frames: tuple[Any, ...], exc: Any) -> None:
        # ROUTER_MANDATORY: that peer is gone. (High-water marks are off, so EAGAIN cannot
        # happen for a ROUTER.)
        if len(frames) > 1:
            self.on_unroutable(frames[0])
        else:
            super()._send_failed(frames, exc)

    def _lead(self, inbox: Inbox, remaining: float | None) -> None:
        if remaining is not None:
            self._poll(inbox, remaining)
            return
        items = inbox.items
        while True:  # the leader waits in recv itself, woken by a message
            if self._outbox:
                self._flush()
            self._read(items, 0)
            if items or inbox.closed or self.closing:
                return

    def _read_frames(self, items: collections.deque[Any], flags: int) -> None:
        """With ``flags`` 0 the first recv blocks until a message -- or a wake-up -- comes.
        Wake-ups are read, never dispatched: the caller looks at the queue and the flags once
        we return. Every message is asked whether more frames follow: a frame left unread
        would be taken for the next message's identity, and a peer could speak for another."""
        recv, noblock, routes = self._recv, self._noblock, self.routes
        for _ in range(BATCH):
            identity = recv(flags)  # messages arrive whole: the other frames are there too
            flags = noblock
            frame = recv(noblock, copy=False)
            if frame.more:
                self._dispatch(self._rest([identity, frame.bytes]))
            else:
                inbox = routes.get(identity)
                if inbox is not None:  # data from a known peer: deliver(), inlined
                    inbox.items.append(frame.bytes)
                    if inbox.waiting:
                        self.notify(inbox)
                elif identity != self._waker_id:
                    self._dispatch([identity, frame.bytes])
            # A zero-timeout zmq_poll costs far less than a failed recv (an exception).
            if items or not self._zpoll(self._sockset, 0):
                return

    def _close_sockets(self) -> None:
        super()._close_sockets()
        with self._waker_lock:
            waker, self._waker = self._waker, None
        waker.close(linger=0)
