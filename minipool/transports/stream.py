"""A buffered byte stream over a socket: the thin I/O loop that the sans-I/O parsers sit on.

Technique: *separating I/O from protocol*. The TCP, HTTP and WebSocket transports all need the
same few things from a socket -- read exactly N bytes, read up to a delimiter with a size cap,
honour a deadline, write several buffers at once, and close from another thread so that a
blocked reader wakes up. They live here, once, so each transport module is only its protocol.

Why it is built this way:

* reads go through one growing buffer filled by ``recv`` calls of up to 64 KiB, so a burst
  of small frames costs one syscall, not one per frame. Not more: CPython's ``recv(n)``
  allocates all ``n`` bytes before it knows how many arrive, and glibc serves 128 KiB and
  more with ``mmap`` (until the process frees a larger mapped block, which raises that
  threshold) -- a 256 KiB ``recv`` that brings a 1 KB frame cost an ``mmap``, a page fault,
  an ``mremap`` and a ``munmap``, and made a 1 KB round trip almost twice as slow when both
  ends share one core;
* a large message never passes through that buffer. The kernel copies it straight into an
  object of its own, with ``MSG_WAITALL`` so that one call receives all of it: with
  ``reuse_buffer``, into the connection's spare buffer when nobody holds it any more
  (:mod:`~minipool.transports.spares`: its pages are already mapped, so the copy is all it
  costs); else the first large frame of a run into a new ``bytearray`` (the part already
  buffered copied in first) and every later one -- after a large frame the next length
  prefix is read on its own, so none of the frame is buffered -- into the ``bytes`` object
  that ``recv(n, MSG_WAITALL)`` creates, as a raw socket would: no zero-filled buffer to
  allocate, no second pass over 16 MB. With a deadline, or over TLS, it is read with
  ``poll`` and ``recv_into`` instead;
* deadlines use ``poll`` rather than ``socket.settimeout``, because a socket's timeout also
  applies to *sends* made from other threads at the same moment;
* writes take a lock (several threads may send on one connection) and gather their parts with
  ``sendmsg``, so a header and its body leave in one write without copying the body: with
  TCP_NODELAY set, one message is one segment train and never waits for a delayed ACK (the
  Nagle stall seed 000's HTTP example would hit). ``ssl`` cannot gather: over TLS small
  parts are joined and a large one is written from where it lies.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from ..errors import ConnectionClosed, FrameTooLarge
from .spares import SpareBuffer

__all__ = ["RESUMABLE_READ", "SocketStream", "configure_socket"]

_CHUNK = 256 * 1024  # a frame larger than this is received into an object of its own
#: A :meth:`SocketStream.read_exact` of at most this many bytes consumes nothing if its
#: deadline passes first (the bytes stay in the buffer for the next call); a larger read is
#: received into an object of its own, which a timeout would throw away half filled.
RESUMABLE_READ = _CHUNK
_FILL = 64 * 1024  # the most one buffered read asks for: below malloc's mmap threshold
_WAITALL = getattr(socket, "MSG_WAITALL", 0)
Buffer = bytes | bytearray | memoryview
T = TypeVar("T")


def configure_socket(sock: socket.socket, *, nodelay: bool = True) -> None:
    """Apply minipool's socket settings: TCP_NODELAY (unless asked not to) and keep-alive."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if nodelay else 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


class SocketStream:
    """Buffered, deadline-aware reads and locked gather-writes on one socket.

    Args:
        sock: a connected, blocking socket (plain or ``ssl.SSLSocket``).
        reuse_buffer: receive large messages into a :class:`~minipool.transports.spares.SpareBuffer`.
    """

    def __init__(self, sock: socket.socket, *, reuse_buffer: bool = False) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._pos = 0  # start of unread data in _buf
        self._large_run = False  # the last frame read_prefixed returned was large
        # What large messages are received into when nothing holds it (see reuse_buffer).
        self._spare = SpareBuffer() if reuse_buffer else None
        self._send_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False
        self._is_ssl = isinstance(sock, ssl.SSLSocket)
        self._poller: select.poll | None = None
        try:
            name = sock.getpeername()
            self.peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else (name or "local")
        except OSError:
            self.peer = "?"

    # -- reading -----------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes already received and not yet consumed."""
        return len(self._buf) - self._pos

    def _wait_readable(self, deadline: float | None) -> None:
        if deadline is None:
            return
        if self._is_ssl and self.sock.pending():  # type: ignore[attr-defined]
            return
        remaining = max(0.0, deadline - time.monotonic())  # 0: a non-blocking poll
        if self._poller is None:  # poll, not select: select() fails for descriptors >= 1024
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        try:
            ready = self._poller.poll(remaining * 1000)
        except (OSError, ValueError) as exc:  # closed under us
            raise ConnectionClosed("connection closed") from exc
        if not ready:
            raise TimeoutError("timed out waiting for data")

    def _receive(self, deadline: float | None, most: int) -> bytes:
        """At least one more byte (and at most ``most``) from the socket."""
        if self._closed:
            raise ConnectionClosed("connection closed")
        self._wait_readable(deadline)
        try:
            data = self.sock.recv(most)
        except (OSError, ValueError) as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from exc
        if not data:
            raise ConnectionClosed("connection closed by peer")
        return data

    def _fill(self, deadline: float | None, most: int = _FILL) -> None:
        """Receive at least one more byte (and at most ``most``) into the buffer."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > _CHUNK:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += self._receive(deadline, most)

    def read_whole(
        self, cut: Callable[[Buffer, int], tuple[int, T] | None], deadline: float | None
    ) -> T | None:
        """One unit (a frame) cut whole out of the bytes at hand, or None.

        ``cut(data, start)`` looks at ``data[start:]`` and returns ``(end, value)`` if it
        begins with a whole unit, else None. With nothing buffered, this receives once first
        (waiting until ``deadline``), and a unit that arrived whole is cut straight out of the
        received bytes, never copied through the buffer: the usual case between a request and
        its reply. None means no whole unit is at hand (every byte is kept): read the slow way.

        Raises:
            ConnectionClosed, TimeoutError: as :meth:`read_exact` (a timeout consumes nothing).
        """
        if self._pos == len(self._buf):
            data = self._receive(deadline, _FILL)
            found = cut(data, 0)
            if found is not None and found[0] == len(data):
                return found[1]
            self._buf.clear()
            self._buf += data
            self._pos = 0 if found is None else found[0]
            return None if found is None else found[1]
        with memoryview(self._buf) as view:
            found = cut(view, self._pos)
        if found is None:
            return None
        self._pos = found[0]
        return found[1]

    def read_exact(self, n: int, deadline: float | None = None) -> bytes:
        """Return exactly ``n`` bytes (perhaps a ``bytearray`` when ``n`` is large: see
        _read_large).

        Raises:
            ConnectionClosed: EOF or error before ``n`` bytes arrived.
            TimeoutError: ``deadline`` (a ``time.monotonic()`` value) passed first.
        """
        if self.buffered >= n:
            start = self._pos
            self._pos += n
            return bytes(self._buf[start : self._pos])
        if n - self.buffered > _CHUNK:
            return self._read_large(n, deadline)
        while self.buffered < n:
            self._fill(deadline)
        return self.read_exact(n, deadline)

    def _read_large(self, n: int, deadline: float | None) -> bytes:
        out: bytearray | bytes | None = None if self._spare is None else self._spare.take(n)
        if out is None and not self.buffered and deadline is None and _WAITALL and not self._is_ssl:
            # No spare to use (none, held, or this is too large to keep), and nothing of it
            # read yet: the kernel can put it all straight into a new bytes object, as a raw
            # socket's recv(n, MSG_WAITALL) does -- no zero-filled buffer first, no second
            # pass over 16 MB.
            self._buf.clear()
            self._pos = 0
            try:
                out = self.sock.recv(n, _WAITALL)
            except (OSError, ValueError) as exc:
                raise ConnectionClosed(f"connection lost: {exc}") from exc
            if len(out) == n:
                return out
            if not out:
                raise ConnectionClosed("connection closed by peer")
            self._buf += out  # cut short (a signal, a shutdown): finish it below
        buffer = bytearray(n) if out is None or type(out) is bytes else out
        with memoryview(buffer) as view:  # (released on the way out: a view holds the buffer)
            self._receive_into(view, deadline)
        # Returned as is: copying 16 MB into an immutable bytes would cost as much again as
        # receiving it. A bytearray is bytes-like for everything that reads a message.
        return buffer  # type: ignore[return-value]

    def _receive_into(self, view: memoryview, deadline: float | None) -> None:
        """Fill ``view``: first with what is buffered, then from the socket."""
        n = len(view)
        have = self.buffered
        if have:
            with memoryview(self._buf) as buffered:  # (a slice of _buf itself would copy)
                view[:have] = buffered[self._pos :]
        self._buf.clear()
        self._pos = 0
        # With no deadline, MSG_WAITALL has the kernel fill the rest in one call instead of
        # one call (and one Python loop turn) per segment train. TLS sockets take no flags.
        flags = _WAITALL if deadline is None and not self._is_ssl else 0
        while have < n:
            if not flags:
                self._wait_readable(deadline)
            try:
                got = self.sock.recv_into(view[have:], n - have, flags)
            except (OSError, ValueError) as exc:
                raise ConnectionClosed(f"connection lost: {exc}") from exc
            if not got:
                raise ConnectionClosed("connection closed by peer")
            have += got

    def read_prefixed(self, prefix: struct.Struct, limit: int, deadline: float | None = None) -> bytes:
        """Read one length-prefixed frame: a ``prefix``-packed length, then that many bytes.

        The fast path -- the whole frame already buffered, as it is for every frame but the
        first of a burst -- costs one slice and no syscall. A frame that arrives alone in one
        receive, as a request or a reply does, is cut straight out of the received bytes and
        never copied through the buffer.

        Raises:
            FrameTooLarge: the announced length exceeds ``limit`` (nothing is allocated for it).
            ConnectionClosed, TimeoutError: as :meth:`read_exact`.
        """
        head = prefix.size
        if self._pos == len(self._buf) and not self._large_run:
            # Nothing buffered, as between a request and its reply: a receive that brings
            # exactly one whole frame is returned as it came, one copy instead of three.
            data = self._receive(deadline, _FILL)
            if len(data) > head:
                (size,) = prefix.unpack_from(data)
                if size == len(data) - head and size <= limit:
                    return data[head:]
            self._buf.clear()
            self._pos = 0
            self._buf += data
        while self.buffered < head:
            # Right after a large frame, read the next prefix alone: if that frame is large
            # too, none of it is in our buffer and _read_large can receive it into a bytes
            # object of its own. (One more syscall, which only a small frame would notice.)
            self._fill(deadline, head - self.buffered if self._large_run else _FILL)
        (size,) = prefix.unpack_from(self._buf, self._pos)
        if size > limit:
            raise FrameTooLarge(size, limit)
        if size > _CHUNK:
            # A large frame is read straight into its own buffer. The deadline covered its
            # start; once it is arriving it is read to the end, so a timeout can never leave
            # half a frame consumed.
            self._pos += head
            self._large_run = True
            return self._read_large(size, None)
        self._large_run = False
        total = head + size
        while self.buffered < total:
            self._fill(deadline)  # a timeout here consumes nothing: the stream stays in sync
        start = self._pos + head
        self._pos += total
        return bytes(self._buf[start : self._pos])

    def read_ready(self, prefix: struct.Struct, limit: int, count: int) -> list[bytes]:
        """Up to ``count`` length-prefixed frames that are already here, without blocking.

        Cuts every whole frame out of the buffer in one loop; if there is none, receives once
        without waiting and tries again. A large frame, or one only partly received, is left
        for :meth:`read_prefixed`.

        Raises:
            FrameTooLarge, ConnectionClosed: as :meth:`read_prefixed`, only if no frame came
                before the trouble (otherwise those frames are returned, and the next read
                raises).
        """
        ready: list[bytes] = []
        head = prefix.size
        for attempt in (0, 1):
            buf, pos = self._buf, self._pos
            end = len(buf)
            while len(ready) < count and end - pos >= head:
                (size,) = prefix.unpack_from(buf, pos)
                if size > limit:
                    self._pos = pos  # the bad frame is next: read_prefixed raises for it
                    if ready:
                        return ready  # the frames before it still count
                    raise FrameTooLarge(size, limit)
                stop = pos + head + size
                if size > _CHUNK or stop > end:
                    break
                ready.append(bytes(buf[pos + head : stop]))
                pos = stop
            self._pos = pos
            if ready or attempt or self._closed:
                break
            try:
                self._fill(time.monotonic())  # a deadline of now: a poll that does not wait
            except TimeoutError:
                break
        return ready

    def read_until(self, delimiter: bytes, limit: int, deadline: float | None = None) -> bytes:
        """Return the bytes up to and including ``delimiter``.

        Raises:
            FrameTooLarge: ``limit`` bytes arrived without the delimiter.
            ConnectionClosed, TimeoutError: as :meth:`read_exact`.
        """
        searched = 0  # bytes after the read position already searched (relative: _fill may
        while True:  # compact the buffer and move the read position to 0)
            end = self._buf.find(delimiter, self._pos + searched)
            if end >= 0:
                end += len(delimiter)
                data = bytes(self._buf[self._pos : end])
                self._pos = end
                return data
            if self.buffered > limit:
                raise FrameTooLarge(self.buffered, limit)
            searched = max(0, self.buffered - len(delimiter) + 1)
            self._fill(deadline)

    # -- writing -----------------------------------------------------------------------------

    def write(self, parts: Sequence[Buffer]) -> None:
        """Write ``parts`` back to back, as few syscalls as possible, under the send lock.

        Raises:
            ConnectionClosed: the connection is closed or broke while writing.
        """
        with self._send_lock:
            if self._closed:
                raise ConnectionClosed("connection closed")
            try:
                if len(parts) == 1:
                    self.sock.sendall(parts[0])
                elif self._is_ssl:  # ssl has no gathering write: a large part goes as itself
                    for run in _ungathered(parts):
                        self.sock.sendall(run)
                else:
                    self._sendmsg_all(parts)
            except (OSError, ValueError) as exc:
                raise ConnectionClosed(f"connection lost: {exc}") from exc

    def try_write(self, data: bytes) -> bool:
        """Write ``data`` only if the send lock is free and the kernel takes it at once.

        Returns False, having written nothing, if either would mean waiting. (TLS sockets cannot
        send without blocking this way: they always write.)

        Raises:
            ConnectionClosed: the connection is closed or broke.
        """
        if not self._send_lock.acquire(blocking=False):
            return False
        try:
            if self._closed:
                raise ConnectionClosed("connection closed")
            if self._is_ssl:
                self.sock.sendall(data)
                return True
            try:
                sent = self.sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            if sent < len(data):  # never leave half a frame: finish it, blocking if need be
                self.sock.sendall(memoryview(data)[sent:])
            return True
        except (OSError, ValueError) as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from exc
        finally:
            self._send_lock.release()

    def _sendmsg_all(self, parts: Sequence[Buffer]) -> None:
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            sent = self.sock.sendmsg(views[:512])  # IOV_MAX is 1024 on Linux
            while sent and views:
                if sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][sent:]
                    sent = 0

    # -- closing -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Shut the socket down (waking a reader blocked in another thread) and close it."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _ungathered(parts: Sequence[Buffer]) -> Iterator[Buffer]:
    """``parts`` for a socket that cannot gather them (TLS): each run of small parts joined
    into one write, each large part written from where it lies (joining 1 MB behind its
    head would copy it once more before ssl reads it into its records)."""
    small: list[Buffer] = []
    for part in parts:
        if len(part) < _FILL:
            small.append(part)
            continue
        if small:
            yield b"".join(small)
            small = []
        yield part
    if small:
        yield b"".join(small)
