"""A ZeroMQ socket shared by threads without an I/O thread: the leader/followers pattern.

Technique: *leader/followers* (Schmidt et al., "Pattern-Oriented Software Architecture",
vol. 2). ZeroMQ sockets must never be used by two threads at once, while minipool's
``Connection`` promises that ``send`` works from any thread and that ``close`` from another
thread wakes a blocked ``recv``. One I/O thread per socket would cost two thread hand-offs per
message on each side. Here the socket belongs to whichever thread holds its *owner lock*:

* a receiver whose inbox is empty and who gets the lock is the *leader*: it reads the socket
  and delivers each message to its connection's :class:`Inbox`, returning once one is its
  own; receivers that find the lock held are *followers* on their own inbox's condition;
* a sender that gets the lock sends directly; otherwise it queues the message and *wakes*
  the leader, which sends it (queued before trying the lock, looked at after releasing it, so
  no message is stranded);
* ``close`` never blocks: whoever owns the socket next closes it;
* an accept thread waits *passively*: never handed the socket while connections exist.

This module is what both kinds of socket share. How a leader waits and how ``wake`` reaches
it differ by socket: :mod:`~minipool.transports.routersocket` (a server's ROUTER, woken by a
message from an in-process DEALER) and :mod:`~minipool.transports.dealersocket` (a client's
DEALER, woken through a socketpair, and waiting as a REQ socket does until first woken). Why
each choice, and the measurements behind them, are in docs/zeromq.md.
"""

from __future__ import annotations

import abc
import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConnectionClosed

__all__ = ["BATCH", "Inbox", "SharedSocket"]

BATCH = 256  # messages a leader reads for others before it polls (and sends) again
_LINGER_MS = 1000  # how long a closed socket keeps trying to deliver its final messages
_PASSIVE_TICK = 0.02  # how often a passive waiter reads a socket that no connection thread reads
_frame_knows_more: bool | None = None  # see _probe_frame_more


class Inbox:
    """What one waiting thread receives: messages, or an exception to raise in its turn."""

    __slots__ = ("closed", "cond", "items", "passive", "waiting")

    def __init__(self, state: threading.Lock, passive: bool = False) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.cond = threading.Condition(state)
        self.waiting = False  # its thread is blocked on cond (set and cleared under state)
        self.closed = False
        self.passive = passive  # an accept loop's inbox: never competes for the socket


def _probe_frame_more(zmq: Any) -> bool:
    """Whether ``recv(copy=False)`` returns frames whose ``more`` is set.

    pyzmq's Cython backend fills ``Frame.more`` from ``ZMQ_RCVMORE`` in C, which is cheaper
    than a separate ``getsockopt`` call from Python; its CFFI backend (PyPy) leaves it False.
    So find out once, on a pair of in-process sockets.
    """
    global _frame_knows_more
    if _frame_knows_more is None:
        context = zmq.Context.instance()
        a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
        try:
            endpoint = f"inproc://minipool-probe-{id(a):x}"
            a.bind(endpoint)
            b.connect(endpoint)
            a.send_multipart([b"1", b"2"])
            _frame_knows_more = bool(b.recv(copy=False).more)
            b.recv()
        finally:
            a.close(linger=0)
            b.close(linger=0)
    return _frame_knows_more


class SharedSocket(abc.ABC):
    """One ZeroMQ socket used by several threads, one at a time, through an owner lock.

    A subclass says how a leader waits (:meth:`_lead`), how a sleeping leader is woken
    (:meth:`wake`), how one message's frames are read (:meth:`_read_frames`) and what it closes
    besides the socket (:meth:`_close_sockets`).

    Args:
        zmq: the pyzmq module (imported by the caller, so this module never needs it).
        sock: the socket; closed by :meth:`close`.
        dispatch: called by the leader with each received message's frames, to put it into
            the right :class:`Inbox` with :meth:`deliver`.
    """

    #: The identity whose messages are wake-ups, read and never dispatched (a ROUTER's).
    _waker_id: bytes | None = None

    def __init__(self, zmq: Any, sock: Any, dispatch: Callable[[list[bytes]], None]) -> None:
        self.zmq, self.sock = zmq, sock
        self._dispatch = dispatch
        self._owner = threading.Lock()
        self.state = threading.Lock()  # guards inboxes, _waiters, _passive; conditions share it
        self._waiters: list[threading.Condition] = []  # followers, in arrival order
        self._passive: list[threading.Condition] = []  # passive waiters, in arrival order
        self._active = 0  # open inboxes that are not passive: connections that exist
        self._outbox: collections.deque[tuple[Any, ...]] = collections.deque()
        self._zpoll = zmq.zmq_poll  # on poll sets built once (zmq.Poller rebuilds its list)
        self._sockset = [(sock, zmq.POLLIN)]
        self._pollset = self._sockset  # what a timed wait polls (a subclass may add to it)
        self._RCVMORE = int(zmq.RCVMORE)
        # Bound once: attribute look-ups on a pyzmq socket go through its __getattr__ hook.
        # ``get`` is getsockopt without turning the answer into an enum; the backend's
        # ``send`` skips the pure-Python wrapper that only handles routing_id/group (unused).
        self._recv, self._get = sock.recv, sock.get
        try:
            self._send = super(zmq.Socket, sock).send  # type: ignore[misc]  # (a pyzmq class)
        except TypeError:  # a socket class of its own: keep its send
            self._send = sock.send
        self._noblock = int(zmq.NOBLOCK)
        self._more = int(zmq.NOBLOCK | zmq.SNDMORE)
        self._read = self._read_frames if _probe_frame_more(zmq) else self._read_by_getsockopt
        self.closed = False
        self.closing = False  # set first by close(), so that no thread starts a new poll
        self.on_unroutable: Callable[[bytes], None] = lambda identity: None
        # Where a one-frame data message goes without asking dispatch: the inbox of each
        # identity behind a ROUTER, or (key None) of a DEALER's one connection.
        self.routes: dict[bytes | None, Inbox] = {}

    def inbox(self, passive: bool = False) -> Inbox:
        """A new inbox; a non-passive one counts as a connection until :meth:`close_inbox`."""
        inbox = Inbox(self.state, passive)
        if not passive:
            with self.state:
                self._active += 1
        return inbox

    # -- sending ------------------------------------------------------------------------
    def send(self, frames: tuple[Any, ...]) -> None:
        """Send one message of any frames (a control message: see :meth:`send_data`)."""
        self._outbox.append(frames)
        self._kick()

    def send_data(self, identity: bytes | None, payload: bytes) -> None:
        """Send one data message: ``[identity, payload]`` on a ROUTER, ``[payload]`` on a
        DEALER. The hot path: straight to the socket when nothing is queued and it is free
        (nothing queued means no earlier message of this thread can be overtaken)."""
        if not self._outbox and self._owner.acquire(False):
            try:
                if not self.closed:
                    if identity is not None:
                        self._send(identity, self._more)
                    self._send(payload, self._noblock)
            except self.zmq.ZMQError as exc:
                self._send_failed((payload,) if identity is None else (identity, payload), exc)
            finally:
                self._owner.release()  # _release(), inlined
                if self._outbox or self.closing or self._waiters or (self._passive and not self._active):
                    self._after_release()
            return
        self._outbox.append((payload,) if identity is None else (identity, payload))
        self._kick()

    def send_many(self, batch: list[tuple[Any, ...]]) -> None:
        self._outbox.extend(batch)
        self._kick()

    def _kick(self) -> None:
        if self._owner.acquire(False):
            try:
                self._flush()
            finally:
                self._release()
        else:
            self.wake()  # the holder sends it; see _release for why nothing is lost

    def _flush(self) -> None:
        if self.closed:
            self._outbox.clear()
            return
        outbox, send_frames = self._outbox, self._send_frames
        while outbox:
            send_frames(outbox.popleft())

    def _send_frames(self, frames: tuple[Any, ...]) -> None:
        send = self._send
        try:
            # Frame by frame with plain-int flags: send_multipart's per-frame checks and enum
            # arithmetic cost more than the send itself for small messages.
            if len(frames) == 1:
                send(frames[0], self._noblock)
                return
            for frame in frames[:-1]:
                send(frame, self._more)
            send(frames[-1], self._noblock)
        except self.zmq.ZMQError as exc:
            self._send_failed(frames, exc)

    def _send_failed(self, frames: tuple[Any, ...], exc: Any) -> None:
        # High-water marks are off, so EAGAIN means no peer is left: the socket is closing.
        if exc.errno != self.zmq.EAGAIN:
            raise exc

    def _release(self) -> None:
        self._owner.release()
        if self._outbox or self.closing or self._waiters or (self._passive and not self._active):
            self._after_release()

    def _after_release(self) -> None:
        # A sender that found the lock held queued its message *before* trying the lock, so
        # looking at the queue after releasing is enough to never strand a message.
        while self._outbox and not self.closed and self._owner.acquire(False):
            try:
                self._flush()
            finally:
                self._owner.release()
        if self.closing:
            self._finish_close()
        # Safe unlocked: a follower registers before it checks the owner lock. A passive
        # waiter is handed the socket only while no connection exists (see wait).
        if self._waiters or (self._passive and not self._active):
            self._hand_over()

    # -- receiving ----------------------------------------------------------------------
    def wait(self, inbox: Inbox, timeout: float | None) -> Any:
        """The next item of ``inbox``, reading the socket ourselves when nobody else is.

        Raises:
            TimeoutError: nothing within ``timeout`` seconds.
            ConnectionClosed: the inbox or the hub was closed.
        """
        items = inbox.items
        # The hot path first: a connection thread with nothing waiting for it, the socket
        # free. It leads until its message is in, and goes. (The loop below does the same,
        # and everything else; this only skips its bookkeeping.)
        if (
            not items
            and timeout is None
            and not inbox.passive
            and not inbox.closed
            and not self.closing
            and self._owner.acquire(False)
        ):
            try:
                if not self.closing:
                    self._lead(inbox, None)
            finally:
                self._owner.release()  # _release(), inlined
                if self._outbox or self.closing or self._waiters or (self._passive and not self._active):
                    self._after_release()
        if items:
            # No lock needed to take from the inbox: only one thread receives on it at a time.
            if self._waiters and not self._owner.locked():
                self._hand_over()
            return items.popleft()
        return self._wait(inbox, timeout)

    def _wait(self, inbox: Inbox, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        items = inbox.items
        while True:
            if items:
                if self._waiters and not self._owner.locked():
                    self._hand_over()
                return items.popleft()
            if inbox.closed or self.closing:
                if self._waiters and not self._owner.locked():
                    self._hand_over()  # we may have been the one meant to read next
                raise ConnectionClosed("connection closed")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if inbox.passive and self._active:
                self._wait_passively(inbox, remaining)
                if remaining == 0.0 and not (items or inbox.closed or self.closing):
                    raise TimeoutError(f"nothing received within {timeout} s")
                continue
            if self._owner.acquire(False):
                try:
                    if not self.closing:
                        self._lead(inbox, remaining)  # reads at least once, even for timeout=0
                finally:
                    self._release()
                if items or remaining != 0.0 or inbox.closed or self.closing:
                    continue
            if remaining == 0.0:
                raise TimeoutError(f"nothing received within {timeout} s")
            with self.state:
                # Register first, then re-check: a leader that left, or a message delivered,
                # before we registered is seen here; after, they notify us.
                waiters, cond = (self._passive if inbox.passive else self._waiters), inbox.cond
                waiters.append(cond)
                inbox.waiting = True
                try:
                    if not (items or inbox.closed or self.closing or not self._owner.locked()):
                        cond.wait(remaining)
                finally:
                    inbox.waiting = False
                    waiters.remove(cond)

    def _wait_passively(self, inbox: Inbox, remaining: float | None) -> None:
        """A passive waiter while connections exist: read only if nobody is, never block on
        the socket, and sleep a tick (or until something is delivered to us)."""
        if self._owner.acquire(False):
            try:
                if not self.closing:
                    self._lead(inbox, 0.0)
            finally:
                self._release()
        if inbox.items or inbox.closed or self.closing or remaining == 0.0:
            return
        tick = _PASSIVE_TICK if remaining is None else min(_PASSIVE_TICK, remaining)
        with self.state:
            cond = inbox.cond
            self._passive.append(cond)
            inbox.waiting = True
            try:
                if not (inbox.items or inbox.closed or self.closing) and self._active:
                    cond.wait(tick)
            finally:
                inbox.waiting = False
                self._passive.remove(cond)

    def _hand_over(self) -> None:
        """Wake a follower to read the socket: we are leaving with our item, perhaps woken by
        a leader's hand-over meant for whoever would read next. Passive waiters are never
        woken for this: a connection thread that just left will usually be back at once."""
        with self.state:
            if self._waiters:
                self._waiters[0].notify()
            elif self._passive and not self._active:
                self._passive[0].notify()  # no connections: a passive waiter may lead

    @abc.abstractmethod
    def _lead(self, inbox: Inbox, remaining: float | None) -> None:
        """Read the socket until ``inbox`` has an item, ``remaining`` seconds pass, or the
        inbox or the hub is closed (whoever closes it wakes us)."""

    @abc.abstractmethod
    def wake(self) -> None:
        """Make the leader, if it is waiting, return and look at the queue and the flags."""

    @abc.abstractmethod
    def _read_frames(self, items: collections.deque[Any], flags: int) -> None:
        """Read and dispatch what the socket holds, stopping early once ``items`` (the
        leader's own inbox) has something; ``flags`` 0 lets the first recv block."""

    def _poll(self, inbox: Inbox, remaining: float | None) -> None:
        """Lead in ``zmq_poll`` on the poll set, where a wake-up reaches us at once."""
        items = inbox.items
        deadline = None if remaining is None else time.monotonic() + remaining
        timeout_ms = -1
        while True:
            if self._outbox:
                self._flush()
            if deadline is not None:
                left = deadline - time.monotonic()
                timeout_ms = 0 if left <= 0 else int(left * 1000) + 1
            ready = self._zpoll(self._pollset, timeout_ms)
            for which, _ in ready:
                if which is self.sock:
                    self._read(items, self._noblock)
                else:
                    self._descriptor_ready(which)
            if items or inbox.closed or self.closing:
                return
            if not ready and timeout_ms >= 0 and (timeout_ms == 0 or time.monotonic() >= deadline):  # type: ignore[operator]
                return

    def _descriptor_ready(self, fd: int) -> None:  # noqa: B027 - an optional hook, not abstract
        """A descriptor a subclass added to the poll set is readable (only a socket kind that
        adds one, the DEALER's monitor, overrides this)."""

    def _rest(self, frames: list[bytes]) -> list[bytes]:
        while True:
            frame = self._recv(self._noblock, copy=False)
            frames.append(frame.bytes)
            if not frame.more:
                return frames

    def _read_by_getsockopt(self, items: collections.deque[Any], flags: int) -> None:
        """Either socket, where frames do not carry ``more`` (pyzmq's CFFI backend)."""
        recv, noblock, get, rcvmore = self._recv, self._noblock, self._get, self._RCVMORE
        for _ in range(BATCH):
            frames = [recv(flags)]
            flags = noblock
            while get(rcvmore):
                frames.append(recv(noblock))
            if frames[0] != self._waker_id:
                self._dispatch(frames)
            if items or not self._zpoll(self._sockset, 0):
                return

    def deliver(self, inbox: Inbox, item: Any) -> None:
        inbox.items.append(item)
        if inbox.waiting:  # read after the append: see wait() for why no wake-up is lost
            self.notify(inbox)

    def notify(self, inbox: Inbox) -> None:
        with self.state:
            inbox.cond.notify()

    def close_inbox(self, inbox: Inbox) -> None:
        with self.state:
            if not inbox.closed and not inbox.passive:
                self._active -= 1
                if not self._active:
                    for cond in self._passive:  # no connection left: it may lead again
                        cond.notify()
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
            for cond in self._passive:
                cond.notify_all()

    def _finish_close(self) -> None:
        if self.closed or not self._owner.acquire(False):
            return
        try:
            if self.closed:
                return
            self._flush()  # a final BYE goes out before the socket closes (with linger)
            self.closed = True
            self._close_sockets()
        finally:
            self._owner.release()

    def _close_sockets(self) -> None:
        """Close the socket (a subclass closes what it added, too); the caller owns it."""
        self.sock.close(linger=_LINGER_MS)
