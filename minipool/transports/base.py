"""The transport interface: how minipool moves whole messages, whatever the wire underneath.

Technique: *pluggable transports* (seed 000 §3.1 asks whether to move data over HTTP or
WebSocket; ZeroMQ and raw TCP are the other classic answers). Everything above this layer sees
only two small abstractions:

* :class:`Connection` -- ``send(bytes)``, ``recv() -> bytes``, ``close()``: an ordered,
  reliable, *message*-oriented channel (each ``recv`` returns exactly one ``send``);
* :class:`Listener` -- ``accept() -> Connection``, ``url``, ``close()``.

A transport is chosen by the URL's scheme (``tcp://``, ``ws://``, ``http://``, ``zmq+tcp://``,
...) from a registry (:data:`TRANSPORTS`, a :class:`~minipool.plugins.Plugins` like the
codecs'), so the coordinator, the workers and the pool never name a transport, and a
third-party package can add one through the ``minipool.transports`` entry-point group::

    [project.entry-points."minipool.transports"]
    quic = "mypkg.quic:transport"      # an object with connect(url, options) and listen(url, options)

Why the handshake is split from ``accept``: a server's accept loop must never wait on one
client. ``Listener.accept()`` returns as soon as the OS hands over the socket; the transport's
opening handshake (TLS, the WebSocket upgrade) runs in :meth:`Connection.handshake`, which the
server calls from the thread that will serve that connection, with a deadline. A client that is
too slow to finish it is dropped without stalling anyone else.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import SplitResult, urlsplit

from ..errors import MinipoolError, TransportError
from ..plugins import Plugins

__all__ = [
    "Connection",
    "Listener",
    "Options",
    "Transport",
    "connect",
    "listen",
    "register_transport",
    "available_transports",
    "TRANSPORTS",
    "parse_url",
    "DEFAULT_MAX_MESSAGE",
]

#: Largest message a transport accepts unless told otherwise (64 MiB).
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024

Buffer = bytes | bytearray | memoryview


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings every transport understands.

    Attributes:
        max_message: largest message, in bytes, that ``recv`` accepts; a larger one raises
            :class:`~minipool.errors.FrameTooLarge` and the connection should be closed.
        ssl_context: for ``tls://``, ``https://`` and ``wss://``: the client or server
            :class:`ssl.SSLContext` to wrap sockets with.
        nodelay: set TCP_NODELAY (disable Nagle's algorithm). ``False`` exists only to let the
            transport benchmark show the Nagle / delayed-ACK stall.
        handshake_timeout: seconds a client's ``connect`` may spend on the opening handshake.
        reuse_buffer: receive large messages into one spare buffer per connection, refilled
            only once nothing holds the message last received into it (``tcp://`` and
            ``tls://``; see :mod:`~minipool.transports.spares`). :mod:`minipool.rpc` turns it
            on; the pool does not, since its worker measured slower with it.
    """

    max_message: int = DEFAULT_MAX_MESSAGE
    ssl_context: ssl.SSLContext | None = None
    nodelay: bool = True
    handshake_timeout: float = 10.0
    reuse_buffer: bool = False


class Connection(abc.ABC):
    """One end of an ordered, reliable, message-oriented channel.

    ``send`` and ``send_many`` are safe to call from several threads at once; ``recv`` is called
    from one thread at a time. ``close`` may be called from any thread, any number of times,
    and makes a ``recv`` blocked in another thread raise :class:`ConnectionClosed`.
    """

    #: A human-readable description of the other end, for logs ("127.0.0.1:50312").
    peer: str = "?"

    def handshake(self, timeout: float | None = None) -> None:  # noqa: B027 -- a no-op default
        """Run the transport's server-side opening handshake (TLS, WebSocket upgrade, ...).

        Servers call this on each accepted connection, in the thread that serves it, before
        anything else. Connections returned by :func:`connect` are already open. The default
        does nothing: plain TCP has no handshake of its own.

        Raises:
            TimeoutError: the peer did not complete it within ``timeout`` seconds.
            ProtocolError: the peer's opening bytes are not this transport's.
            ConnectionClosed: the peer went away.
        """

    @abc.abstractmethod
    def send(self, message: Buffer) -> None:
        """Send one message.

        Raises:
            ConnectionClosed: the connection is closed.
        """

    def send_many(self, messages: Sequence[Buffer]) -> None:
        """Send several messages, as one write where the transport can (fewer syscalls)."""
        for message in messages:
            self.send(message)

    def send_parts(self, parts: Sequence[Buffer]) -> None:
        """Send one message made of ``parts`` back to back (an envelope head and its body).

        A stream transport writes them with one gathering ``sendmsg``, so a large body goes to
        the kernel from where it lies; the default joins them and calls :meth:`send`.
        """
        self.send(b"".join(parts))

    def try_send(self, message: Buffer) -> bool:
        """Send ``message`` only if that will not block; return whether it was sent.

        Used for heartbeats, which must never stall on a peer that has stopped reading. The
        default sends (possibly blocking) and returns True; socket transports override it.
        """
        self.send(message)
        return True

    def recv_ready(self, limit: int) -> list[bytes]:
        """The messages that have already arrived, up to ``limit``, without waiting (perhaps none).

        A reader that handles input in bursts calls this after a blocking :meth:`recv`. The
        default polls ``recv(timeout=0.0)``; stream transports override it to cut every whole
        frame out of their buffer in one loop.

        Raises:
            As :meth:`recv`, except TimeoutError, and only when no message came before the
            trouble.
        """
        ready: list[bytes] = []
        while len(ready) < limit:
            try:
                ready.append(self.recv(timeout=0.0))
            except TimeoutError:
                break
            except MinipoolError:
                if ready:  # the messages before the trouble still count; the next recv raises
                    break
                raise
        return ready

    @abc.abstractmethod
    def recv(self, timeout: float | None = None) -> bytes:
        """Receive the next whole message.

        Small messages come back as ``bytes``; a large one may come back as a ``bytearray``
        (bytes-like, and one copy cheaper), perhaps the connection's spare buffer, which is
        refilled only once nothing holds it (:mod:`~minipool.transports.spares`): a message,
        or a view into it, that the caller keeps never changes.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds (the connection stays usable
                only if the transport says so; minipool closes it).
            ConnectionClosed: the peer closed the connection or it was closed locally.
            FrameTooLarge: the next message exceeds ``Options.max_message``.
            ProtocolError: the peer sent bytes that break the transport's framing.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection. Idempotent and thread-safe."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether :meth:`close` has run or the peer has gone."""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.peer} {state}>"


class Listener(abc.ABC):
    """A bound server endpoint that hands out :class:`Connection` objects."""

    #: The URL clients connect to, with an ephemeral port (``:0``) resolved to the real one.
    url: str

    @abc.abstractmethod
    def accept(self) -> Connection:
        """Wait for the next client. Its opening handshake has *not* run yet: see
        :meth:`Connection.handshake`.

        Raises:
            ConnectionClosed: the listener was closed (from any thread).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop listening. Idempotent; makes a blocked :meth:`accept` raise ``ConnectionClosed``."""

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Transport(Protocol):
    """What a transport module (or entry-point object) provides."""

    def connect(self, url: SplitResult, options: Options) -> Connection: ...

    def listen(self, url: SplitResult, options: Options) -> Listener: ...


def _adopt_entry_point(transports: Plugins[Transport], ep: Any) -> None:
    # Built-in schemes win: a plug-in adds transports, it does not replace tcp://. Loaded on
    # first use, like the built-in modules.
    if ep.name.lower() not in transports:
        transports.add_lazy(ep.name.lower(), ep.load)


def _module(name: str) -> Callable[[], Transport]:
    return lambda: importlib.import_module(name)


#: Every transport by URL scheme. A module is imported on first use, so that ``import
#: minipool`` does not import pyzmq or the WebSocket code.
TRANSPORTS: Plugins[Transport] = Plugins(
    "transport",
    "minipool.transports",
    lambda scheme, known: TransportError(f"no transport for {scheme}:// URLs (known: {known})"),
    _adopt_entry_point,
)
for _scheme, _name in (
    ("tcp", "tcp"),
    ("tls", "tcp"),
    ("http", "http"),
    ("https", "http"),
    ("ws", "websocket"),
    ("wss", "websocket"),
    ("zmq+tcp", "zmq"),
):
    TRANSPORTS.add_lazy(_scheme, _module(f"minipool.transports.{_name}"))
del _scheme, _name


def register_transport(scheme: str, transport: Transport | str) -> None:
    """Make ``scheme://`` URLs use ``transport`` (an object or a module name)."""
    if isinstance(transport, str):
        TRANSPORTS.add_lazy(scheme.lower(), _module(transport))
    else:
        TRANSPORTS.add(scheme.lower(), transport)


def available_transports() -> list[str]:
    """The URL schemes minipool knows (some may need an extra to actually work)."""
    return TRANSPORTS.names()


def parse_url(url: str) -> SplitResult:
    """Split ``url`` and check it names a host and port.

    Raises:
        TransportError: the URL has no scheme, host or port.
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise TransportError(f"not a transport URL (scheme://host:port): {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise TransportError(f"bad port in {url!r}") from exc
    if port is None:
        raise TransportError(f"URL needs a port: {url!r}")
    return parts


def _options(overrides: dict[str, object]) -> Options:
    try:
        return Options(**overrides)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"unknown transport option: {exc}") from None


def connect(url: str, **options: object) -> Connection:
    """Open a client connection to ``url``; keyword arguments are :class:`Options` fields.

    Raises:
        TransportError: unknown scheme or malformed URL.
        OSError: the server cannot be reached.
    """
    parts = parse_url(url)
    return TRANSPORTS.get(parts.scheme.lower()).connect(parts, _options(options))


def listen(url: str, **options: object) -> Listener:
    """Bind a server endpoint at ``url`` (port 0 picks a free port; see ``Listener.url``)."""
    parts = parse_url(url)
    return TRANSPORTS.get(parts.scheme.lower()).listen(parts, _options(options))
