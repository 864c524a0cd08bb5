"""A ZeroMQ socket shared by threads without an I/O thread: the leader/followers pattern.

Technique: *leader/followers* (Schmidt et al., "Pattern-Oriented Software Architecture",
vol. 2). ZeroMQ sockets must never be used by two threads at once, while minipool's
``Connection`` promises that ``send`` works from any thread and that ``close`` from another
thread wakes a blocked ``recv``. The textbook answer, one I/O thread per socket fed through a
queue, costs two thread hand-offs per message on each side -- most of a 1 KB round trip.

Here the socket belongs to whichever thread holds its *owner lock*:

* a receiver whose inbox is empty and who gets the lock becomes the *leader*: it waits until
  the socket has a message (or it is woken; see below for how), reads what arrived, and
  delivers each message to its connection's :class:`Inbox`, returning at once when the
  message is its own. Receivers that find the lock held are *followers* and sleep on their
  own inbox's condition; a leader that leaves hands the socket to one of them.
* a sender that gets the lock sends directly; otherwise it queues the message and *wakes*
  the leader, which sends it. A sender queues *before* trying the lock and the owner looks
  at the queue *after* releasing it, so no message is ever stranded between the two.
* ``close`` never blocks: it sets a flag and wakes the leader; whoever owns the socket next
  (at once if nobody does) closes it.

A lone client thread, or a server thread answering its own connection, thus uses the socket
directly with no thread switch -- provided nobody else keeps taking the socket from it. The
server's accept thread would: it waits for new peers on the same ROUTER, and as an ordinary
follower it was handed the socket each time a connection thread left with its request, only
to find that thread back a moment later (a wasted wake-up, about one and a half per round
trip) or, worse, to keep the socket and turn every request into a hand-off and every reply
into a wake-up. So an accept thread waits *passively* (:meth:`SharedSocket.wait`
on an inbox made with ``passive=True``):

* while connections exist it never blocks on the socket and is never handed it: a connection
  thread that has just left with its message will usually be back within microseconds. It
  sleeps for ``_PASSIVE_TICK`` (or until a new connection is delivered to it) and then, if
  nobody holds the socket, reads it once without blocking -- so a new peer is still accepted,
  within a tick, while every connection thread is busy elsewhere;
* while no connection exists it leads like any receiver, blocking on the socket: then there
  is nobody to compete with, and the connection its read creates is what it returns.

How a leader waits, and how ``wake`` reaches it, depends on the socket:

* on a server's ROUTER the leader waits inside ZeroMQ, in a blocking ``recv`` (GIL released),
  as a raw REP server does. ``zmq_poll`` would check the socket's ``ZMQ_EVENTS`` before and
  after waiting: a few more syscalls per message. A wake-up is then a *message*: the hub
  connects an in-process DEALER to its own ROUTER, and ``wake`` sends an empty frame through
  it, under a random identity that no remote peer can take over (a ROUTER refuses a second
  peer with an identity in use). A ROUTER routes what it sends by identity, so this waker
  never receives anything. A wait with a deadline polls the ROUTER instead;
* a client's DEALER cannot do the same: a DEALER deals its outgoing messages round-robin
  among its peers, and the waker would get every other request. So its leader waits in
  ``zmq_poll`` on a poll set built once (``zmq.Poller`` rebuilds it on every call) -- the
  DEALER, a socketpair that ``wake`` writes a byte to, and the DEALER's monitor socket,
  watched as a plain descriptor: its ``ZMQ_FD``, edge-triggered, drained until empty whenever
  it fires (asked as a socket, it would cost two ``ZMQ_EVENTS`` syscalls per wait to hear of
  an event that comes once per connection);
* ...except while nobody has needed to wake it. ``zmq_poll`` checks the socket's
  ``ZMQ_EVENTS`` before and after it waits -- on loopback that made a round trip about 10%
  slower than a REQ socket's blocking ``recv``. So a DEALER's leader with no deadline first
  waits in ``recv`` too, for at most ``_LONE_TICK_MS`` at a time (the socket's ``RCVTIMEO``),
  reading the monitor between ticks: a *lone* client thread, one that sends and receives by
  itself as a REQ socket's user does, waits as REQ waits. The first ``wake`` -- a close from
  another thread, or a send from one that finds the socket held -- ends that for good: the
  leader sees it within a tick, and from then on waits in ``zmq_poll``, where a wake-up
  reaches it at once. One limit: pyzmq restarts an interrupted ``recv`` with its whole
  timeout, so while Python signal handlers run more often than once a tick (a profiler on
  ``SIGPROF``, a fast ``setitimer``), a lone leader sees that first wake-up only when a
  message arrives. A ``recv`` with a timeout never waits this way; minipool's own clients
  and workers always pass one.

The leader delivers a one-frame data message straight to its inbox through :attr:`routes`
(identity to inbox; ``None`` for a DEALER's one connection) and calls ``dispatch`` only for
everything else: new peers, control messages, garbage. Whether more frames follow costs
something in pyzmq either way -- ``recv(copy=False)`` builds a ``Frame`` whose ``more`` it
fills in C, ``getsockopt(RCVMORE)`` goes through an enum look-up, each about a microsecond:

* a ROUTER asks for every message (a ``Frame`` for the payload): a frame left unread would be
  taken for the next message's identity, and a peer could then speak for another;
* a DEALER asks only when the first frame is as short as a control kind (at most one byte).
  A longer first frame is data; should the server send it with more frames after it, they
  are read as the messages that follow, control messages included -- from the one peer a
  DEALER has, so nobody is impersonated.

Sends skip pyzmq's pure-Python ``send`` wrapper.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConnectionClosed

__all__ = ["Inbox", "SharedSocket"]

_BATCH = 256  # messages a leader reads for others before it polls (and sends) again
_LINGER_MS = 1000  # how long a closed socket keeps trying to deliver its final messages
_LONE_TICK_MS = 50  # how long a lone DEALER leader blocks in recv before it looks around
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


class SharedSocket:
    """One ZeroMQ socket used by several threads, one at a time, through an owner lock.

    Args:
        zmq: the pyzmq module (imported by the caller, so this module never needs it).
        sock: the ROUTER or DEALER socket; closed by :meth:`close`.
        dispatch: called by the leader with each received message's frames, to put it into
            the right :class:`Inbox` with :meth:`deliver`.
        monitor: an optional monitor socket, watched too; its events go to ``on_event``.
    """

    def __init__(self, zmq: Any, sock: Any, dispatch: Callable[[list[bytes]], None],
                 monitor: Any = None, on_event: Callable[[Any], None] | None = None) -> None:
        self.zmq, self.sock, self.monitor = zmq, sock, monitor
        self._dispatch, self._on_event = dispatch, on_event
        self._owner = threading.Lock()
        self.state = threading.Lock()  # guards inboxes, _waiters, _passive; conditions share it
        self._waiters: list[threading.Condition] = []  # followers, in arrival order
        self._passive: list[threading.Condition] = []  # passive waiters, in arrival order
        self._active = 0  # open inboxes that are not passive: connections that exist
        self._outbox: collections.deque[tuple[Any, ...]] = collections.deque()
        self._routed = sock.getsockopt(zmq.TYPE) == zmq.ROUTER  # frames start with an identity
        self._zpoll = zmq.zmq_poll  # on poll sets built once (zmq.Poller rebuilds its list)
        self._sockset = [(sock, zmq.POLLIN)]
        self._monitor_fd = -1
        if self._routed:
            # A ROUTER's leader waits inside ZeroMQ, in a blocking recv, and is woken by a
            # message: an in-process DEALER, connected to the ROUTER, that only ever sends an
            # empty frame under an identity no peer can guess (see the module docstring).
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
            self._pollset = self._sockset  # timed waits poll the socket alone
            self._lone = False  # (lone mode is a DEALER's: see _lead)
        else:
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._pollset = [(sock, zmq.POLLIN), (self._wake_r.fileno(), zmq.POLLIN)]
            # Until the first wake-up, a leader with no deadline blocks in recv itself (see
            # _lead), for at most _LONE_TICK_MS at a time.
            self._lone = True
            sock.setsockopt(zmq.RCVTIMEO, _LONE_TICK_MS)
            self._again = zmq.Again
            if monitor is not None:
                # The monitor's notification descriptor, watched as a plain descriptor: as a
                # socket, zmq_poll would ask it for ZMQ_EVENTS twice per wait (a syscall
                # each), though it speaks once per connection. Like any ZMQ_FD it is
                # edge-triggered, so _read_monitor drains the monitor until ZeroMQ says it is
                # empty (which re-arms it) -- and once at the first wait, for events queued
                # before we took it over.
                self._monitor_fd = monitor.getsockopt(zmq.FD)
                self._pollset.append((self._monitor_fd, zmq.POLLIN))
                self._monitorset = [(monitor, zmq.POLLIN)]
        self._monitor_unread = monitor is not None
        self._RCVMORE = int(zmq.RCVMORE)
        # Bound once: attribute look-ups on a pyzmq socket go through its __getattr__ hook.
        # ``get`` is getsockopt without turning the answer into an enum; the backend's
        # ``send`` skips the pure-Python wrapper that only handles routing_id/group (unused).
        self._recv, self._get = sock.recv, sock.get
        try:
            self._send = super(zmq.Socket, sock).send
        except TypeError:  # a socket class of its own: keep its send
            self._send = sock.send
        self._noblock = int(zmq.NOBLOCK)
        self._more = int(zmq.NOBLOCK | zmq.SNDMORE)
        if not _probe_frame_more(zmq):
            self._read = self._read_by_getsockopt
        elif self._routed:
            self._read = self._read_routed
        else:
            self._read = self._read_dealer
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
                if self._outbox or self.closing or self._waiters or (
                        self._passive and not self._active):
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

    def wake(self) -> None:
        """Make the leader, if it is waiting, return and look at the queue and the flags."""
        if self._routed:
            with self._waker_lock:
                if self._waker is not None:
                    try:
                        self._waker.send(b"", self._noblock)
                    except self.zmq.ZMQError:  # the ROUTER is closing
                        pass
            return
        self._lone = False  # from now on the leader waits where a wake-up reaches it
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full (a wake-up is already pending) or hub closed
            pass

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
        # ROUTER_MANDATORY: that peer is gone. (High-water marks are off, so EAGAIN cannot
        # happen for a ROUTER; a DEALER with no peer left is closing anyway.)
        if self._routed and len(frames) > 1:
            self.on_unroutable(frames[0])
        elif exc.errno != self.zmq.EAGAIN:
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
        if (not items and timeout is None and not inbox.passive and not inbox.closed
                and not self.closing and self._owner.acquire(False)):
            try:
                if not self.closing:
                    self._lead(inbox, None)
            finally:
                self._owner.release()  # _release(), inlined
                if self._outbox or self.closing or self._waiters or (
                        self._passive and not self._active):
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

    def _lead(self, inbox: Inbox, remaining: float | None) -> None:
        """Read the socket until ``inbox`` has an item, ``remaining`` seconds pass, or the
        inbox or the hub is closed (whoever closes it wakes us)."""
        items = inbox.items
        if remaining is None and self._routed:
            while True:  # a ROUTER's leader waits in recv itself (see the module docstring)
                if self._outbox:
                    self._flush()
                self._read(items, 0)
                if items or inbox.closed or self.closing:
                    return
        if self._monitor_unread:
            self._monitor_unread = False
            self._read_monitor()
        if remaining is None:
            while self._lone:  # a DEALER nobody has woken yet: wait in recv, as a REQ does
                if self._outbox:
                    self._flush()
                try:
                    self._read(items, 0)
                except self._again:  # a tick without a message: what did the monitor see?
                    if self.monitor is not None:
                        self._read_monitor()
                if items or inbox.closed or self.closing:
                    return
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
                elif which == self._monitor_fd:
                    self._read_monitor()
                else:  # the socketpair
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
            if items or inbox.closed or self.closing:
                return
            if not ready and timeout_ms >= 0 and (
                    timeout_ms == 0 or time.monotonic() >= deadline):  # type: ignore[operator]
                return

    # _read is one of these three, chosen once in __init__: each message's frames are read
    # with as little Python as each kind of socket allows.
    def _read_routed(self, items: collections.deque[Any], flags: int) -> None:
        """Read and dispatch what the ROUTER holds, stopping early once ``items`` (the
        leader's own inbox) has something. With ``flags`` 0 the first recv blocks until a
        message -- or a wake-up -- comes. Wake-ups are read, never dispatched: the caller
        looks at the queue and the flags once we return."""
        recv, noblock, routes = self._recv, self._noblock, self.routes
        for _ in range(_BATCH):
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

    def _read_dealer(self, items: collections.deque[Any], flags: int) -> None:
        """As _read_routed, for a DEALER (which has no identities and never blocks here)."""
        recv, noblock = self._recv, self._noblock
        for _ in range(_BATCH):
            payload = recv(flags)  # (flags 0: blocks for at most _LONE_TICK_MS)
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

    def _rest(self, frames: list[bytes]) -> list[bytes]:
        while True:
            frame = self._recv(self._noblock, copy=False)
            frames.append(frame.bytes)
            if not frame.more:
                return frames

    def _read_by_getsockopt(self, items: collections.deque[Any], flags: int) -> None:
        """Either socket, where frames do not carry ``more`` (pyzmq's CFFI backend)."""
        recv, noblock, get, rcvmore = self._recv, self._noblock, self._get, self._RCVMORE
        for _ in range(_BATCH):
            frames = [recv(flags)]
            flags = noblock
            while get(rcvmore):
                frames.append(recv(noblock))
            if not self._routed or frames[0] != self._waker_id:
                self._dispatch(frames)
            if items or not self._zpoll(self._sockset, 0):
                return

    def _read_monitor(self) -> None:
        while self._zpoll(self._monitorset, 0):
            frames = self.monitor.recv_multipart(self._noblock)
            if self._on_event is not None:
                self._on_event(frames)

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
            if self.monitor is not None:
                self.sock.disable_monitor()
                self.monitor.close(linger=0)
            self.sock.close(linger=_LINGER_MS)
            if self._routed:
                with self._waker_lock:
                    waker, self._waker = self._waker, None
                waker.close(linger=0)
            else:
                self._wake_r.close()
                self._wake_w.close()
        finally:
            self._owner.release()
