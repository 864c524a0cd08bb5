"""The server side of remote objects: a :class:`Daemon` that serves registered objects.

Technique: *a threaded object server* (Pyro4's). One thread per connection, so calls on one
proxy run in order, and a call may call other remote objects -- even, through another
connection, its own daemon (the seed's chain of three servers in a ring). A shared object must
be thread-safe, as in Pyro4. Each connection passes the pool's mutual HMAC handshake before a
byte of it is unpickled; each call is a SUBMIT, each answer a RESULT or a FAILURE carrying the
exception and the remote traceback.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..cluster.session import server_handshake
from ..errors import AuthenticationError, ConnectionClosed, ProtocolError
from ..task import pack_outcome, unpack_invocation
from ..transports.admission import Admission
from ..transports.base import Connection, listen
from ..transports.serving import serve_each
from ..wire import Format, Kind, Message, decode, encode_buffers, encode_gathered, refusal
from .calls import gathered, large, remote_method, required_key
from .names import NameKeeper

__all__ = ["Daemon"]

log = logging.getLogger("minipool.rpc")


class Daemon:
    """Serves registered objects to proxies at ``url``.

    Args:
        url: where to listen (any transport; port 0 picks a free one; 127.0.0.1 by default).
        authkey: the shared key (default: ``MINIPOOL_AUTHKEY``).
        name_server: the URL of a coordinator whose registry keeps the names (optional).
        max_connections: connections served at once; more are refused.
        handshake_timeout: seconds a new connection has to authenticate. At most
            ``admission.MAX_OPENINGS`` connections may be authenticating at once; one more
            closes the oldest, so silent sockets cannot hold every connection slot.
        transport_options: passed to the transport (``ssl_context=``, ``max_message=``, ...).

    Raises:
        ValueError: no authkey.
        OSError: the address cannot be bound.
    """

    def __init__(
        self,
        url: str = "tcp://127.0.0.1:0",
        *,
        authkey: bytes | str | None = None,
        name_server: str | None = None,
        max_connections: int = 256,
        handshake_timeout: float = 5.0,
        **transport_options: Any,
    ) -> None:
        self._key = required_key(authkey)
        self._listener = listen(url, **{"reuse_buffer": True, **transport_options})  # (see Proxy)
        self.url = self._listener.url
        self._objects: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._admission = Admission(server="rpc")
        self._handshake_timeout = handshake_timeout
        self._closed = threading.Event()
        self._serving: threading.Thread | None = None
        try:
            self._names = NameKeeper(name_server, self._key, transport_options) if name_server else None
        except BaseException:
            self._listener.close()
            raise

    def register(self, obj: Any, name: str | None = None) -> str:
        """Serve ``obj`` under ``name`` (default: a unique one); return its URI.

        With a name server, the name is registered there too (as service ``rpc:<name>``).

        Raises:
            ValueError: the name is taken by another object, or contains ``#``.
        """
        name = name or f"obj_{id(obj):x}"
        if "#" in name:
            raise ValueError(f"an object name cannot contain '#': {name!r}")
        with self._lock:
            if self._objects.get(name, obj) is not obj:
                raise ValueError(f"the name {name!r} is already registered to another object")
            self._objects[name] = obj
        uri = f"{self.url}#{name}"
        if self._names is not None:
            self._names.add(name, uri)
        return uri

    def unregister(self, name: str) -> None:
        """Stop serving ``name`` (calls to it fail with ``LookupError``)."""
        with self._lock:
            self._objects.pop(name, None)
        if self._names is not None:
            self._names.remove(name)

    def uri(self, name: str) -> str:
        """The URI a :class:`Proxy` reaches the object ``name`` by, without a name server."""
        return f"{self.url}#{name}"

    # -- serving -------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept connections and serve each in a thread of its own, until :meth:`close`."""
        serve_each(
            self._listener.accept,
            self._admit,
            self._serve,
            stopping=self._closed.is_set,
            thread_name=lambda conn: f"minipool-rpc-{conn.peer}",
            unserved=self._unserved,
        )

    def _admit(self, conn: Connection) -> Connection | None:
        if not self._slots.acquire(blocking=False):
            log.warning("rpc: refusing %s: %s", conn.peer, "too many connections")
            conn.close()
            return None
        self._admission.admit(conn)  # may close the connection that has waited longest
        return conn

    def _unserved(self, conn: Connection, exc: RuntimeError) -> None:
        """No thread to be had: refuse this one, keep serving."""
        log.warning("rpc: refusing %s: %s", conn.peer, exc)
        self._admission.opened(conn)
        conn.close()
        self._slots.release()

    def start(self) -> Daemon:
        """Serve in a background thread; returns the daemon."""
        self._serving = threading.Thread(target=self.serve_forever, daemon=True, name="minipool-rpc")
        self._serving.start()
        return self

    def _serve(self, conn: Connection) -> None:
        with self._lock:
            self._connections.add(conn)
        try:
            if self._closed.is_set():  # accepted just as close() swept the connections
                return
            try:
                server_handshake(conn, self._key, self._handshake_timeout)
            finally:
                self._admission.opened(conn)
            while True:
                self._answer(conn, decode(conn.recv(), view=True))
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 -- one bad peer: log, close it, serve the rest
            log.warning("rpc: closing %s: %s", conn.peer, exc)
            try:
                conn.send(refusal(str(exc), authentication=isinstance(exc, AuthenticationError)))
            except Exception:  # noqa: BLE001 -- it may be gone already
                pass
        finally:
            conn.close()
            with self._lock:
                self._connections.discard(conn)
            self._slots.release()

    def _answer(self, conn: Connection, msg: Message) -> None:
        if msg.kind is Kind.HEARTBEAT:
            return
        if msg.kind is not Kind.SUBMIT:
            raise ProtocolError(f"expected a call (SUBMIT), got {msg.kind.name}")
        try:
            name, method, args, kwargs = unpack_invocation(msg.body)
        except ProtocolError:
            raise  # not a call at all: that peer's connection goes
        except Exception as exc:  # noqa: BLE001 -- a class this side cannot import, say
            self._reply(conn, msg.id, False, exc)
            return
        try:
            with self._lock:
                obj = self._objects.get(name)
            if obj is None:
                raise LookupError(f"no object named {name!r} at {self.url}")
            ok, value = True, remote_method(obj, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- the caller gets it, with our traceback
            ok, value = False, exc
        self._reply(conn, msg.id, ok, value)

    @staticmethod
    def _reply(conn: Connection, number: int, ok: bool, value: Any) -> None:
        parts = gathered(value) if ok and large(value) else None
        if parts is not None:
            conn.send_parts(encode_gathered(Kind.RESULT, number, parts, Format.PICKLE, "none", None))
            return
        ok, body, codec = pack_outcome(ok, value)
        conn.send_parts(
            encode_buffers(Kind.RESULT if ok else Kind.FAILURE, number, body, Format.PICKLE, codec, None)
        )

    def close(self) -> None:
        """Stop serving: the listener, every connection, the names' renewals."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()
        if self._names is not None:
            self._names.close()
        if self._serving is not None:
            self._serving.join(5)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
