"""The proxy itself: listening, a pump per direction of each connection, and the controls.

See :mod:`minipool.chaos` for the faults and why the proxy is built with pumps, due times and
shut-down sockets.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import random
import select
import socket
import threading
import time
from typing import Any

from ..transports.serving import serve_each
from .faults import Faults, changed_faults, is_number, parse_address

__all__ = ["ChaosProxy", "Link"]

CHUNK = 64 * 1024  # bytes read at once
HOLD_LIMIT = 1024 * 1024  # bytes a pump may hold before it stops reading its source
CONNECT_TIMEOUT = 5.0  # seconds to reach the target for each accepted connection
UP, DOWN = "up", "down"  # client -> target, target -> client


class Link:
    """One proxied connection: the client's socket, the target's, and what both pumps share."""

    def __init__(self, number: int, client: socket.socket) -> None:
        self.number = number
        self.client = client
        self.target: socket.socket | None = None
        self.down = threading.Event()  # set once a fault or close() has shut it down
        self.lock = threading.Lock()
        self.forwarded = 0  # bytes both ways, for cut_after
        self.pumps = 2  # the last pump to finish closes the sockets
        self.closed = False

    def shut(self) -> None:
        """Shut both sockets down (waking every thread blocked on them), without closing them."""
        self.down.set()
        with self.lock:  # never shut down a descriptor number that close() has handed back
            if self.closed:
                return
            for sock in (self.client, self.target):
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for sock in (self.client, self.target):
                if sock is not None:
                    sock.close()


class ChaosProxy:
    """A TCP proxy in front of ``target`` that injects network faults (see the module docs).

    Args:
        target: where to forward each connection, ``"HOST:PORT"`` or ``(host, port)``.
        listen: where to listen; the default, port 0 on 127.0.0.1, lets the OS pick a port.
        seed: makes each connection's faults reproducible.
        faults: the initial :class:`Faults`, by name (``delay=0.05, cut_rate=0.01``, ...).

    Raises:
        ValueError: a malformed address or fault value.
        TypeError: an unknown fault name.
        OSError: the listening address cannot be bound.
    """

    def __init__(
        self,
        target: str | tuple[str, int],
        *,
        listen: str | tuple[str, int] = "127.0.0.1:0",
        seed: int | None = None,
        **faults: Any,
    ) -> None:
        self.target = parse_address(target)
        self.faults = changed_faults(Faults(), faults)
        self.seed = seed
        host, port = parse_address(listen, any_port=True)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self.address: tuple[str, int] = (host, self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._stall = threading.Condition(self._lock)
        self._stalled_until = 0.0  # monotonic time; math.inf: until resume()
        self._links: set[Link] = set()
        self._numbers = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._counts = dict.fromkeys(
            (
                "connections",
                "open",
                "bytes_up",
                "bytes_down",
                "cut",
                "refused",
                "corrupted",
                "stalls",
                "target_unreachable",
            ),
            0,
        )
        self._closed = False
        self._acceptor = threading.Thread(
            target=self._accept_loop, daemon=True, name=f"minipool-chaos-accept-{self.address[1]}"
        )
        self._acceptor.start()

    # -- the controls ------------------------------------------------------------------------

    def url(self, scheme: str = "tcp") -> str:
        """The proxy's address as a URL of ``scheme`` (``tcp``, ``ws``, ``http``, ...)."""
        host, port = self.address
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    def set(self, **changes: Any) -> Faults:
        """Change faults while the proxy runs; they apply from the next chunk on. Returns them.

        Raises:
            ValueError: a value out of range. TypeError: an unknown fault name.
        """
        self.faults = changed_faults(self.faults, changes)
        return self.faults

    def cut_all(self) -> int:
        """Close every open connection now, both sides; returns how many there were."""
        with self._lock:
            links = [link for link in self._links if not link.down.is_set()]
            for link in links:
                link.down.set()
            self._counts["cut"] += len(links)
            self._stall.notify_all()
        for link in links:
            link.shut()
        return len(links)

    def stall(self, seconds: float | None = None) -> None:
        """Stop forwarding, on open and new connections alike, for ``seconds`` or (``None``)
        until :meth:`resume`. Connections stay open; bytes wait, in order.

        Raises:
            ValueError: ``seconds`` is negative or not a number.
        """
        if seconds is not None and (not is_number(seconds) or seconds < 0):
            raise ValueError(f"seconds must be >= 0 (or None), not {seconds!r}")
        with self._lock:
            self._stalled_until = math.inf if seconds is None else time.monotonic() + seconds
            self._counts["stalls"] += 1

    def resume(self) -> None:
        """End a stall: everything held is forwarded (what is overdue, at once)."""
        with self._lock:
            self._stalled_until = 0.0
            self._stall.notify_all()

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self._stalled_until

    def counters(self) -> dict[str, int]:
        """Connections accepted and open, bytes forwarded each way (``bytes_up``: client to
        target), and faults injected by kind: ``cut`` (connections), ``refused``,
        ``corrupted`` (chunks), ``stalls``, and ``target_unreachable``."""
        with self._lock:
            return dict(self._counts)

    def status_line(self) -> str:
        """The counters on one line, for a progress display."""
        c = self.counters()
        return (
            f"connections {c['connections']} (open {c['open']})  up {c['bytes_up']:,} B  "
            f"down {c['bytes_down']:,} B  cut {c['cut']}  refused {c['refused']}  "
            f"corrupted {c['corrupted']}  stalls {c['stalls']}"
            + (f"  target unreachable {c['target_unreachable']}" if c["target_unreachable"] else "")
        )

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and shut every connection; wait up to ``timeout`` s for the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            links = list(self._links)
            self._stall.notify_all()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        for link in links:
            link.shut()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [self._acceptor, *self._threads]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ChaosProxy {self.url()} -> {self.target[0]}:{self.target[1]}: {self.faults}>"

    # -- accepting ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        serve_each(
            lambda: self._listener.accept()[0],
            self._admit,
            lambda link: self._tracked(self._open, link),
            stopping=lambda: self._closed,
            thread_name=lambda link: f"minipool-chaos-link {link.number}",
        )

    def _admit(self, client: socket.socket) -> Link | None:
        with self._lock:
            if self._closed:
                client.close()
                return None
            self._counts["connections"] += 1
            if self.faults.refuse:
                self._counts["refused"] += 1
                client.close()
                return None
            link = Link(next(self._numbers), client)
            self._links.add(link)
            self._counts["open"] += 1
            return link

    def _start(self, target: Any, *args: Any) -> None:
        threading.Thread(
            target=self._tracked, args=(target, *args), daemon=True, name="minipool-chaos-pump"
        ).start()

    def _tracked(self, target: Any, *args: Any) -> None:
        """Run ``target`` as one of the threads :meth:`close` waits for."""
        me = threading.current_thread()
        with self._lock:
            self._threads.add(me)
        try:
            target(*args)
        finally:
            with self._lock:
                self._threads.discard(me)

    def _open(self, link: Link) -> None:
        """Reach the target, then pump client -> target in this thread (a second one pumps back)."""
        try:
            target = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
        except OSError:
            with self._lock:
                self._counts["target_unreachable"] += 1
            link.pumps = 1
            self._finish(link)
            return
        link.target = target
        target.settimeout(None)
        for sock in (link.client, target):
            with contextlib.suppress(OSError):  # a peer already gone: the pumps will find out
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # chunks leave when due
        if link.down.is_set():  # cut (or closed) while we were connecting
            link.shut()
        self._start(self._pump, link, target, link.client, DOWN)
        self._pump(link, link.client, target, UP)

    def _finish(self, link: Link) -> None:
        with self._lock:
            link.pumps -= 1
            if link.pumps:
                return
            self._links.discard(link)
            self._counts["open"] -= 1
        link.close()

    # -- forwarding --------------------------------------------------------------------------

    def _pump(self, link: Link, source: socket.socket, dest: socket.socket, direction: str) -> None:
        """Forward ``source`` to ``dest`` until either side closes or a fault cuts the link."""
        rng = random.Random(None if self.seed is None else f"{self.seed}:{link.number}:{direction}")
        held: collections.deque[tuple[float, bytearray]] = collections.deque()  # (due, chunk)
        held_bytes = 0
        last_due = link_free = 0.0  # the newest chunk's due time; when the "wire" is free again
        poller = select.poll()
        poller.register(source, select.POLLIN)
        at_eof = False
        try:
            while not link.down.is_set():
                self._wait_while_stalled(link)
                now = time.monotonic()
                while held and held[0][0] <= now and not link.down.is_set() and not self.stalled:
                    _, chunk = held.popleft()
                    held_bytes -= len(chunk)
                    self._forward(link, chunk, dest, direction, rng)
                if link.down.is_set():
                    break
                if at_eof and not held:
                    dest.shutdown(socket.SHUT_WR)  # pass the half-close on: byte for byte, FIN too
                    break
                wait = held[0][0] - time.monotonic() if held else None
                if at_eof or held_bytes >= HOLD_LIMIT:
                    link.down.wait(max(0.0, wait or 0.0))
                    continue
                if not poller.poll(None if wait is None else max(0, math.ceil(wait * 1000))):
                    continue
                faults = self.faults
                size = CHUNK if faults.bandwidth is None else max(512, min(CHUNK, int(faults.bandwidth / 50)))
                data = source.recv(size)
                if not data:
                    at_eof = True
                    continue
                now = time.monotonic()
                due = now
                if faults.bandwidth is not None:
                    link_free = max(now, link_free) + len(data) / faults.bandwidth
                    due = link_free
                due += faults.delay + (rng.uniform(0, faults.jitter) if faults.jitter else 0.0)
                last_due = max(due, last_due)  # never overtake the chunk before
                held.append((last_due, bytearray(data)))
                held_bytes += len(data)
        except OSError:
            link.shut()  # one side reset or went away: the other side learns it by a close
        finally:
            self._finish(link)

    def _wait_while_stalled(self, link: Link) -> None:
        with self._lock:
            while not link.down.is_set() and not self._closed:
                left = self._stalled_until - time.monotonic()
                if left <= 0:
                    return
                self._stall.wait(min(left, 1.0))

    def _forward(
        self, link: Link, chunk: bytearray, dest: socket.socket, direction: str, rng: random.Random
    ) -> None:
        faults = self.faults
        if faults.cut_rate and rng.random() < faults.cut_rate:
            self._cut(link)
            return
        cut_now = False
        with link.lock:
            if faults.cut_after is not None and len(chunk) >= faults.cut_after - link.forwarded:
                del chunk[max(0, faults.cut_after - link.forwarded) :]
                cut_now = True
            link.forwarded += len(chunk)
        if chunk and faults.corrupt_rate and rng.random() < faults.corrupt_rate:
            chunk[rng.randrange(len(chunk))] ^= 1 << rng.randrange(8)
            with self._lock:
                self._counts["corrupted"] += 1
        if chunk:
            dest.sendall(chunk)
            with self._lock:
                self._counts["bytes_up" if direction == UP else "bytes_down"] += len(chunk)
        if cut_now:
            self._cut(link)

    def _cut(self, link: Link) -> None:
        with self._lock:
            if link.down.is_set():
                return
            link.down.set()
            self._counts["cut"] += 1
        link.shut()
