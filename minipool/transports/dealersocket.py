"""A client's DEALER shared by its threads: a lone leader waits as REQ does, a woken one polls.

Technique: *wait the cheap way until someone needs to wake you*. A DEALER deals its outgoing
messages round-robin among its peers, so it cannot be woken by a message from an in-process
socket as a ROUTER is (:mod:`~minipool.transports.routersocket`): that waker would get every
other request. So a :class:`DealerSocket`'s leader waits in ``zmq_poll`` on a poll set built
once -- the DEALER, a socketpair that ``wake`` writes a byte to, and the monitor socket as a
plain descriptor (its edge-triggered ``ZMQ_FD``, drained until empty whenever it fires).

``zmq_poll`` checks the socket's ``ZMQ_EVENTS`` before and after it waits, which costs a lone
client -- one thread that sends a request and waits for its reply -- a few syscalls per round
trip. So until the first ``wake``, a leader with no deadline blocks in ``recv`` for at most
``_LONE_TICK_MS`` at a time (the socket's ``RCVTIMEO``), reading the monitor between ticks; the
first wake-up ends that for good. Only a first frame as short as a control kind (one byte) is
asked whether more frames follow: the one peer a DEALER has can only speak for itself. The
leader/followers core is :mod:`~minipool.transports.sharedsocket`; docs/zeromq.md has the
reasons, the limits and the measurements.
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Callable
from typing import Any

from .sharedsocket import BATCH, Inbox, SharedSocket

__all__ = ["DealerSocket"]

_LONE_TICK_MS = 50  # how long a lone leader blocks in recv before it looks around


class DealerSocket(SharedSocket):
    """A DEALER socket used by one connection's threads.

    Args:
        monitor: an optional monitor socket, watched too; its events go to ``on_event``.
    """

    def __init__(
        self,
        zmq: Any,
        sock: Any,
        dispatch: Callable[[list[bytes]], None],
        monitor: Any = None,
        on_event: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(zmq, sock, dispatch)
        self.monitor, self._on_event = monitor, on_event
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pollset = [(sock, zmq.POLLIN), (self._wake_r.fileno(), zmq.POLLIN)]
        # Until the first wake-up, a leader with no deadline blocks in recv itself (see
        # _lead), for at most _LONE_TICK_MS at a time.
        self._lone = True
        sock.setsockopt(zmq.RCVTIMEO, _LONE_TICK_MS)
        self._again = zmq.Again
        self._monitor_fd = -1
        if monitor is not None:
            # The monitor's notification descriptor, watched as a plain descriptor: as a
            # socket, zmq_poll would ask it for ZMQ_EVENTS twice per wait (a syscall each),
            # though it speaks once per connection. Like any ZMQ_FD it is edge-triggered, so
            # _read_monitor drains the monitor until ZeroMQ says it is empty (which re-arms
            # it) -- and once at the first wait, for events queued before we took it over.
            self._monitor_fd = monitor.getsockopt(zmq.FD)
            self._pollset.append((self._monitor_fd, zmq.POLLIN))
            self._monitorset = [(monitor, zmq.POLLIN)]
        self._monitor_unread = monitor is not None

    def wake(self) -> None:
        self._lone = False  # from now on the leader waits where a wake-up reaches it
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full (a wake-up is already pending) or hub closed
            pass

    def _lead(self, inbox: Inbox, remaining: float | None) -> None:
        items = inbox.items
        if self._monitor_unread:
            self._monitor_unread = False
            self._read_monitor()
        if remaining is None:
            while self._lone:  # nobody has woken us yet: wait in recv, as a REQ does
                if self._outbox:
                    self._flush()
                try:
                    self._read(items, 0)
                except self._again:  # a tick without a message: what did the monitor see?
                    if self.monitor is not None:
                        self._read_monitor()
                if items or inbox.closed or self.closing:
                    return
        self._poll(inbox, remaining)

    def _descriptor_ready(self, fd: int) -> None:
        if fd == self._monitor_fd:
            self._read_monitor()
            return
        try:  # the socketpair
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _read_frames(self, items: collections.deque[Any], flags: int) -> None:
        """A longer first frame is data at once; should the server send more frames after it,
        they are read as the messages that follow. With ``flags`` 0 the first recv blocks
        for at most ``_LONE_TICK_MS``."""
        recv, noblock = self._recv, self._noblock
        for _ in range(BATCH):
            payload = recv(flags)
            flags = noblock
            inbox = self.routes.get(None)
            if len(payload) < 2 and self._get(self._RCVMORE):
                self._dispatch(self._rest([payload]))
            elif inbox is not None:
                inbox.items.append(payload)
                if inbox.waiting:
                    self.notify(inbox)
            else:
                self._dispatch([payload])
            if items or not self._zpoll(self._sockset, 0):
                return

    def _read_monitor(self) -> None:
        while self._zpoll(self._monitorset, 0):
            frames = self.monitor.recv_multipart(self._noblock)
            if self._on_event is not None:
                self._on_event(frames)

    def _close_sockets(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
        super()._close_sockets()
        self._wake_r.close()
        self._wake_w.close()
