"""A ZeroMQ socket shared by threads without an I/O thread: the leader/followers pattern.

Technique: *leader/followers* (Schmidt et al., "Pattern-Oriented Software Architecture",
vol. 2). ZeroMQ sockets must never be used by two threads at once, while minipool's
``Connection`` promises that ``send`` works from any thread and that ``close`` from another
thread wakes a blocked ``recv``. The textbook answer, one I/O thread per socket fed through a
queue, costs two thread hand-offs per message on each side -- most of a 1 KB round trip.

Here the socket belongs to whichever thread holds its *owner lock*:

* a receiver whose inbox is empty and who gets the lock becomes the *leader*: it polls the
  socket (and a wake-up socketpair), reads what arrived, and delivers each message to its
  connection's :class:`Inbox`, returning at once when the message is its own. Receivers that
  find the lock held are *followers* and sleep on their own inbox's condition; a leader that
  leaves hands the socket to one of them.
* a sender that gets the lock sends directly; otherwise it queues the message and writes a
  byte to the socketpair so that the leader, blocked in poll, wakes and sends it. A sender
  queues *before* trying the lock and the owner looks at the queue *after* releasing it, so no
  message is ever stranded between the two.

A lone client thread, or a server answering one request at a time, thus uses the socket
directly with no thread switch. Used by :mod:`minipool.transports.zmq`.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConnectionClosed

__all__ = ["Inbox", "SharedSocket"]

_BATCH = 256  # messages a leader reads per wake-up before it looks at its own inbox again
_LINGER_MS = 1000  # how long a closed socket keeps trying to deliver its final messages


class Inbox:
    """What one waiting thread receives: messages, or an exception to raise in its turn."""

    def __init__(self, state: threading.Lock) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.cond = threading.Condition(state)
        self.waiting = False  # its thread is blocked on cond (set and cleared under state)
        self.closed = False


class SharedSocket:
    """One ZeroMQ socket used by several threads, one at a time, through an owner lock.

    Args:
        zmq: the pyzmq module (imported by the caller, so this module never needs it).
        sock: the ROUTER or DEALER socket; closed by :meth:`close`.
        dispatch: called by the leader with each received message's frames, to put it into
            the right :class:`Inbox` with :meth:`deliver`.
        monitor: an optional monitor socket, polled too; its events go to ``on_event``.
    """

    def __init__(self, zmq: Any, sock: Any, dispatch: Callable[[list[bytes]], None],
                 monitor: Any = None, on_event: Callable[[Any], None] | None = None) -> None:
        self.zmq, self.sock, self.monitor = zmq, sock, monitor
        self._dispatch, self._on_event = dispatch, on_event
        self._owner = threading.Lock()
        self.state = threading.Lock()  # guards inboxes and _waiters; conditions share it
        self._waiters: list[threading.Condition] = []
        self._outbox: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._wake_fd = self._wake_r.fileno()  # poll() reports plain sockets by descriptor
        self._poller.register(self._wake_fd, zmq.POLLIN)
        if monitor is not None:
            self._poller.register(monitor, zmq.POLLIN)
        self._noblock = int(zmq.NOBLOCK)
        self._more = int(zmq.NOBLOCK | zmq.SNDMORE)
        self.closed = False
        self.closing = False  # set first by close(), so that no thread starts a new poll
        self.on_unroutable: Callable[[bytes], None] = lambda identity: None

    # -- sending ------------------------------------------------------------------------
    def send(self, frames: tuple[Any, ...]) -> None:
        self._outbox.append(frames)
        self._kick()

    def send_many(self, batch: list[tuple[Any, ...]]) -> None:
        self._outbox.extend(batch)
        self._kick()

    def _kick(self) -> None:
        if self._owner.acquire(blocking=False):
            try:
                self._flush()
            finally:
                self._release()
        else:
            self.wake()  # the holder sends it; see _release for why nothing is lost

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full (a wake-up is already pending) or hub closed
            pass

    def _flush(self) -> None:
        if self.closed:
            self._outbox.clear()
            return
        send, noblock, more = self.sock.send, self._noblock, self._more
        while self._outbox:
            frames = self._outbox.popleft()
            try:
                # Frame by frame with plain-int flags: send_multipart's per-frame checks and
                # enum arithmetic cost more than the send itself for small messages.
                for frame in frames[:-1]:
                    send(frame, more)
                send(frames[-1], noblock)
            except self.zmq.ZMQError as exc:
                # ROUTER_MANDATORY: that peer is gone. (High-water marks are off, so EAGAIN
                # cannot happen for a ROUTER; a DEALER with no peer left is closing anyway.)
                if len(frames) > 1 and isinstance(frames[0], bytes):
                    self.on_unroutable(frames[0])
                elif exc.errno != self.zmq.EAGAIN:
                    raise

    def _release(self) -> None:
        self._owner.release()
        # A sender that found the lock held queued its message *before* trying the lock, so
        # looking at the queue after releasing is enough to never strand a message.
        while self._outbox and not self.closed and self._owner.acquire(blocking=False):
            try:
                self._flush()
            finally:
                self._owner.release()
        if self.closing:
            self._finish_close()
        if self._waiters:  # safe unlocked: a follower registers before it checks the owner lock
            self._hand_over()

    # -- receiving ----------------------------------------------------------------------
    def wait(self, inbox: Inbox, timeout: float | None) -> Any:
        """The next item of ``inbox``, reading the socket ourselves when nobody else is.

        Raises:
            TimeoutError: nothing within ``timeout`` seconds.
            ConnectionClosed: the inbox or the hub was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        items = inbox.items
        while True:
            # No lock needed to take from the inbox: only one thread receives on it at a time.
            if items:
                if self._waiters and not self._owner.locked():
                    self._hand_over()
                return items.popleft()
            if inbox.closed or self.closing:
                if self._waiters and not self._owner.locked():
                    self._hand_over()  # we may have been the one meant to read next
                raise ConnectionClosed("connection closed")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._owner.acquire(blocking=False):
                try:
                    if not self.closing:
                        self._lead(inbox, remaining)  # polls at least once, even for timeout=0
                finally:
                    self._release()
                if items or remaining != 0.0 or inbox.closed or self.closing:
                    continue
            if remaining == 0.0:
                raise TimeoutError(f"nothing received within {timeout} s")
            with self.state:
                # Register first, then re-check: a leader that left, or a message delivered,
                # before we registered is seen here; after, they notify us.
                self._waiters.append(inbox.cond)
                inbox.waiting = True
                try:
                    if not (items or inbox.closed or self.closing or not self._owner.locked()):
                        inbox.cond.wait(remaining)
                finally:
                    inbox.waiting = False
                    self._waiters.remove(inbox.cond)

    def _hand_over(self) -> None:
        """Wake a follower to read the socket: we are leaving with our item, perhaps woken by
        a leader's hand-over meant for whoever would read next."""
        with self.state:
            if self._waiters:
                self._waiters[0].notify()

    def _lead(self, inbox: Inbox, remaining: float | None) -> None:
        zmq = self.zmq
        if self._outbox:
            self._flush()
        timeout_ms = -1 if remaining is None else int(remaining * 1000) + (remaining > 0)
        readable = False
        for sock, _ in self._poller.poll(timeout_ms):
            if sock is self.sock:
                readable = True
            elif sock == self._wake_fd:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            elif sock is self.monitor and self._on_event is not None:
                self._on_event(self.monitor.recv_multipart(self._noblock))
        if self._outbox:
            self._flush()
        if readable:
            recv_multipart, noblock, dispatch = self.sock.recv_multipart, self._noblock, self._dispatch
            for _ in range(_BATCH):
                try:
                    frames = recv_multipart(noblock)
                except zmq.Again:
                    break
                dispatch(frames)
                if inbox.items:
                    break

    def deliver(self, inbox: Inbox, item: Any) -> None:
        inbox.items.append(item)
        if inbox.waiting:  # read after the append: see wait() for why no wake-up is lost
            with self.state:
                inbox.cond.notify()

    def close_inbox(self, inbox: Inbox) -> None:
        with self.state:
            inbox.closed = True
            inbox.cond.notify_all()
        self.wake()  # in case that inbox's thread is the leader, blocked in poll

    def close(self) -> None:
        """Close the socket: now if no thread owns it, else as soon as its owner lets go.

        Never blocks, so it is safe from any thread -- including a signal handler that runs
        in the very thread that owns the socket, interrupted in the middle of its poll.
        """
        self.closing = True
        self.wake()  # a leader blocked in poll returns, releases the socket and finishes
        self._finish_close()
        with self.state:
            for cond in self._waiters:
                cond.notify_all()

    def _finish_close(self) -> None:
        if self.closed or not self._owner.acquire(blocking=False):
            return
        try:
            if self.closed:
                return
            self._flush()  # a final BYE goes out before the socket closes (with linger)
            self.closed = True
            if self.monitor is not None:
                self.sock.disable_monitor()
                self.monitor.close(linger=0)
            self.sock.close(linger=_LINGER_MS)
            self._wake_r.close()
            self._wake_w.close()
        finally:
            self._owner.release()
