"""Remote objects: a Pyro4-style daemon, proxies, and names kept by the coordinator.

Technique: *remote method invocation* (seed 002's Pyro4 and RPyC; seed 000 §2.1's message
passing versus RPC). A :class:`Daemon` serves objects; a :class:`Proxy` stands in for one of
them in another process, and calling ``proxy.method(*args)`` runs ``method`` on the real object
and returns its result -- or raises its exception -- as if it were local. The pool's tasks are
*message passing*: a function and its arguments travel to wherever a worker is free, and the
worker keeps nothing. An RPC call goes to *one particular object*, which keeps its state
between calls: a counter, a cache, a connection, the next link of a chain.

How the pieces map onto Pyro4's::

    Pyro4.Daemon()                      ->  Daemon("tcp://127.0.0.1:0", authkey=key)
    daemon.register(obj)                ->  daemon.register(obj, "name")  # returns a URI
    python -m Pyro4.naming              ->  python -m minipool coordinator
    ns.register("server", uri)          ->  Daemon(..., name_server=url) registers every name
    Pyro4.Proxy("PYRONAME:server")      ->  Proxy("name:server", name_server=url, authkey=key)
    Pyro4.Proxy("PYRO:obj@host:port")   ->  Proxy("tcp://host:port#obj", authkey=key)
    daemon.requestLoop()                ->  daemon.serve_forever()  (or start(): a thread)
    @Pyro4.expose                       ->  @expose

Why it is built this way:

* it is the pool's own wire format and handshake, not a new protocol: a call is a SUBMIT whose
  body is the pickled ``(object name, method, args, kwargs)`` (no JSON headers: they cost more
  than the rest of a small call's encoding); the answer is a RESULT or a FAILURE carrying the
  exception and the remote traceback (the same encoding as a task's outcome,
  :mod:`minipool.task`). Every transport works, and nothing is unpickled before the mutual HMAC
  handshake has passed;
* the name server is the coordinator's service registry (Consul-style entries with a
  time-to-live, :mod:`minipool.cluster.registry`): a daemon registers each name as service
  ``rpc:<name>`` and renews it, so the name of a daemon that died simply expires;
* only what is marked with :func:`expose` can be called, never a name that starts with ``_``:
  a proxy must not reach ``__class__`` or ``__reduce__`` of the object behind it;
* a large ``bytes`` argument or result is never copied on its way out: it is pickled in parts
  (:func:`_gathered`, the pickler writes a large bytes object as itself), the CRC is chained
  over the parts and the transport gathers them with one ``sendmsg``; on the way in the body
  is a view into the received message (:data:`minipool.wire.VIEW_MIN`). Small calls keep the
  plain pickler, which is cheaper for them;
* one thread per connection, as Pyro4's threaded server: calls on one proxy run in order, and a
  call may call other remote objects -- even, through another connection, its own daemon (the
  seed's chain of three servers in a ring). A shared object must be thread-safe, as in Pyro4.
"""

from __future__ import annotations

import functools
import itertools
import logging
import pickle
import threading
import time
import types
from collections.abc import Callable
from typing import Any
from urllib.parse import urldefrag

from .client import RemoteClient
from .cluster.session import open_connection, server_handshake, shared_key
from .errors import AuthenticationError, ConnectionClosed, MinipoolError, ProtocolError
from .task import PROTOCOL, pack_invocation, pack_outcome, unpack_invocation, unpack_outcome
from .transports.admission import Admission
from .transports.base import Connection, listen
from .wire import VIEW_MIN, Buffer, Format, Kind, Message, decode, encode_buffers, encode_gathered, refusal

__all__ = ["expose", "Daemon", "Proxy", "locate", "NAME_TTL"]

log = logging.getLogger(__name__)

#: Seconds a name lives in the registry without being renewed (the daemon renews it at a third).
NAME_TTL = 10.0
_RETIRED_TTL = 1e-9  # a name given up: its entry expires as it is written
_RETIRE_WAIT = 5.0  # seconds a closing daemon waits for the coordinator to confirm it
_EXPOSED = "_minipool_exposed"


def expose(target: Any) -> Any:
    """Mark a class (all its public methods) or a single method as callable through a proxy."""
    setattr(target, _EXPOSED, True)
    return target


def _remote_method(obj: Any, name: str) -> Callable[..., Any]:
    """The bound method ``name`` of ``obj`` if a proxy may call it.

    Callable: a function (or a static or class method) defined in a class of ``obj``'s MRO
    that is marked with :func:`expose` itself, or whose *defining* class is marked -- so an
    exposed class does not expose what a subclass adds or what it inherits (``dict.clear``),
    and nested classes, properties and other attributes are never reachable.

    Raises:
        AttributeError: private, missing, not a method, or not exposed.
    """
    if not name or name.startswith("_"):
        raise AttributeError(f"{name!r} is private: remote calls reach public methods only")
    for cls in type(obj).__mro__:
        if name in vars(cls):
            raw = vars(cls)[name]
            break
    else:
        raise AttributeError(f"{type(obj).__name__!r} object has no method {name!r}")
    function = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    if not isinstance(function, types.FunctionType):
        raise AttributeError(f"{type(obj).__name__}.{name} is not a method")
    if not (getattr(function, _EXPOSED, False) or vars(cls).get(_EXPOSED, False)):
        raise AttributeError(
            f"{type(obj).__name__}.{name} is not exposed (decorate it, or the "
            f"class that defines it, with minipool.rpc.expose)"
        )
    return getattr(obj, name)


_picklers = threading.local()


def _large(value: Any) -> bool:
    """Whether ``value`` is a bytes object large enough to be worth :func:`_gathered` (a
    check of the top level only: it costs the small calls next to nothing)."""
    return type(value) is bytes and len(value) >= VIEW_MIN


def _carries_large(args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether a call has an argument that :func:`_large` says is worth :func:`_gathered`."""
    for arg in args:
        if type(arg) is bytes and len(arg) >= VIEW_MIN:
            return True
    return bool(kwargs) and any(map(_large, kwargs.values()))


def _gathered(value: Any) -> list[bytes] | None:
    """``value`` pickled as the parts the pickler writes, or None if the plain pickler cannot
    pickle it (the caller falls back to :mod:`minipool.task`'s, which ships what it must by
    value). A bytes object of 64 KiB or more is written as a part of its own -- the very
    object, not a copy -- so a large argument or result reaches the socket as it is: pickling
    1 MB into one ``bytes`` costs more than sending it. A mutable buffer (a ``bytearray``) is
    copied, so that another thread changing it cannot make the CRC and the bytes sent differ.
    One pickler per thread, reused."""
    state = getattr(_picklers, "state", None)
    _picklers.state = None  # taken while in use: a value whose pickling pickles gets its own
    if state is None:
        parts: list[bytes] = []

        def write(data: Any) -> None:
            parts.append(data if type(data) is bytes else bytes(data))

        state = (pickle.Pickler(types.SimpleNamespace(write=write), PROTOCOL), parts)
    pickler, written = state
    try:
        pickler.dump(value)
        return written[:]
    except BaseException:  # noqa: BLE001 -- whatever it was, the fallback pickles it again and decides
        return None
    finally:
        written.clear()
        pickler.clear_memo()
        _picklers.state = state


def _key(authkey: bytes | str | None) -> bytes:
    key = shared_key(authkey)
    if not key:
        raise ValueError("an authkey is needed: pass authkey= or set MINIPOOL_AUTHKEY")
    return key


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
        self._key = _key(authkey)
        self._listener = listen(url, **transport_options)
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
            self._names = _NameKeeper(name_server, self._key, transport_options) if name_server else None
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
        while not self._closed.is_set():
            try:
                conn = self._listener.accept()
            except (ConnectionClosed, OSError) as exc:
                if self._closed.is_set():
                    return
                log.warning("rpc: accept failed: %s", exc)
                time.sleep(0.05)  # (out of descriptors, say: do not spin)
                continue
            if not self._slots.acquire(blocking=False):
                log.warning("rpc: refusing %s: %s", conn.peer, "too many connections")
                conn.close()
                continue
            self._admission.admit(conn)  # may close the connection that has waited longest
            try:
                threading.Thread(
                    target=self._serve, args=(conn,), daemon=True, name=f"minipool-rpc-{conn.peer}"
                ).start()
            except RuntimeError as exc:  # no thread to be had: refuse this one, keep serving
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
            ok, value = True, _remote_method(obj, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- the caller gets it, with our traceback
            ok, value = False, exc
        self._reply(conn, msg.id, ok, value)

    @staticmethod
    def _reply(conn: Connection, number: int, ok: bool, value: Any) -> None:
        parts = _gathered(value) if ok and _large(value) else None
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


class _NameKeeper:
    """Keeps a daemon's names alive in a coordinator's registry: registers, renews, retires.

    Each name is registered under the key ``<uri>`` (unique to this daemon) offering the
    service ``rpc:<name>``, so two daemons serving one name never overwrite each other.
    """

    def __init__(self, url: str, key: bytes, options: dict[str, Any]) -> None:
        self._url, self._key, self._options = url, key, options
        self._client = RemoteClient(url, key, **options)
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()  # held while registering: remove() never races a renewal
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="minipool-rpc-names")
        self._renewer.start()

    def add(self, name: str, uri: str) -> None:
        with self._lock:
            self._names[name] = uri
            self._register(name, uri, NAME_TTL)
        # The coordinator handles one connection's messages in order: once this answer is
        # back, the name is in the registry, and a proxy may look it up from anywhere.
        self._client.lookup(f"rpc:{name}")

    def remove(self, name: str) -> None:
        with self._lock:
            uri = self._names.pop(name, None)
            if uri is not None:
                self._retire({name: uri})

    def _register(self, name: str, uri: str, ttl: float) -> None:
        self._client.register(uri, address=uri, services=[f"rpc:{name}"], ttl=ttl)

    def _retire(self, names: dict[str, str]) -> None:
        """Expire these names' entries, and return once the coordinator has done it.

        A REGISTER has no answer, and a lookup from another connection may be handled first
        (the coordinator serves each connection on its own thread): without the round trip,
        a name this daemon has just given up is still found, and a proxy reaches a closed
        daemon. The registry has no delete over the wire, so the entry is re-registered to
        expire a nanosecond after it is written: gone for every later lookup. A coordinator
        that cannot be reached is not waited for: the names then expire with their TTL.
        """
        if not names:
            return
        try:
            for name, uri in names.items():
                self._register(name, uri, _RETIRED_TTL)
            # One round trip covers them all: a connection's messages are handled in order.
            self._client.lookup(f"rpc:{next(iter(names))}", timeout=_RETIRE_WAIT)
        except (MinipoolError, OSError, TimeoutError) as exc:
            log.warning(
                "rpc: cannot retire %s at %s (they expire in %gs): %s",
                ", ".join(names),
                self._url,
                NAME_TTL,
                exc,
            )

    def _renew(self) -> None:
        while not self._stop.wait(NAME_TTL / 3):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    try:
                        self._register_all()
                    except ConnectionClosed:  # the client is between attempts, or gave up
                        self._client.close()
                        self._client = RemoteClient(self._url, self._key, **self._options)
                        self._register_all()
                except (MinipoolError, OSError) as exc:  # the coordinator is away: next time
                    log.warning("rpc: cannot renew names at %s: %s", self._url, exc)

    def _register_all(self) -> None:
        for name, uri in self._names.items():
            self._register(name, uri, NAME_TTL)

    def close(self) -> None:
        self._stop.set()
        self._renewer.join(NAME_TTL)
        with self._lock:
            self._retire(self._names)
            self._names.clear()
        self._client.close()


def locate(
    name: str,
    *,
    name_server: str,
    authkey: bytes | str | None = None,
    timeout: float = 10.0,
    **transport_options: Any,
) -> str:
    """The URI registered for ``name`` at the coordinator ``name_server``.

    Raises:
        LookupError: no live entry has that name.
    """
    client = RemoteClient(
        name_server, _key(authkey), timeout=timeout, reconnect_timeout=0, **transport_options
    )
    try:
        entries = client.lookup(f"rpc:{name}", timeout)
    finally:
        client.close()
    if not entries:
        raise LookupError(f"no object named {name!r} is registered at {name_server}")
    return str(entries[0]["address"])


class Proxy:
    """Stands in for a remote object: ``proxy.method(*args, **kwargs)`` calls it there.

    Args:
        uri: ``"<daemon url>#<name>"`` (what :meth:`Daemon.register` returns), or
            ``"name:<name>"`` to look the name up at ``name_server`` (Pyro4's ``PYRONAME:``).
        authkey: the shared key (default: ``MINIPOOL_AUTHKEY``).
        name_server: the coordinator URL for ``name:`` URIs.
        timeout: seconds a call may take before it raises ``TimeoutError`` (None: no limit).
        transport_options: passed to the transport.

    The connection opens at the first call and is reused; calls from several threads take
    turns. A call whose connection breaks raises ``ConnectionClosed`` (it may or may not have
    run: nothing is retried behind your back); the next call connects afresh.
    """

    def __init__(
        self,
        uri: str,
        *,
        authkey: bytes | str | None = None,
        name_server: str | None = None,
        timeout: float | None = None,
        **transport_options: Any,
    ) -> None:
        self._key = _key(authkey)
        self._options = transport_options
        self._name_server = name_server
        self._uri = uri
        if uri.startswith("name:"):
            if not name_server:
                raise ValueError(f"{uri!r} needs name_server= (the coordinator that keeps names)")
            self._url, self._name = "", uri[len("name:") :]
        else:
            self._url, self._name = urldefrag(uri)
            if not self._name:
                raise ValueError(f"{uri!r} names no object: expected '<url>#<name>' or 'name:<name>'")
        self._timeout = timeout
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        return functools.partial(self._call, method)

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            if self._uri.startswith("name:"):  # each new connection asks where the name is now
                self._url, _ = urldefrag(
                    locate(self._name, name_server=str(self._name_server), authkey=self._key, **self._options)
                )
            self._conn = open_connection(self._url, self._key, {"role": "rpc-client"}, **self._options)
        return self._conn

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        number = next(self._numbers)
        call = (self._name, method, args, kwargs)
        parts = _gathered(call) if _carries_large(args, kwargs) else None
        request: tuple[Buffer, ...]
        if parts is None:
            request = encode_buffers(Kind.SUBMIT, number, pack_invocation(*call), Format.PICKLE, "none", None)
        else:
            request = encode_gathered(Kind.SUBMIT, number, parts, Format.PICKLE, "none", None)
        with self._lock:
            conn = self._connection()
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            try:
                conn.send_parts(request)
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    reply = decode(conn.recv(left), view=True)
                    if reply.kind is Kind.ERROR:
                        raise ConnectionClosed(
                            f"{self._url} closed the connection: {reply.headers.get('reason')}"
                        )
                    if reply.id == number and reply.kind in (Kind.RESULT, Kind.FAILURE):
                        break  # (an answer to an earlier call that timed out is skipped)
            except (ConnectionClosed, ProtocolError, TimeoutError):
                # After a timeout the daemon's thread for this connection is still busy with
                # the call: the next call gets a connection (and a thread) of its own.
                conn.close()
                raise
        ok, value = unpack_outcome(reply.kind is Kind.RESULT, reply.body, reply.codec)
        if ok:
            return value
        raise value

    def _close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def __repr__(self) -> str:
        return f"<minipool.rpc.Proxy {self._uri}>"

    def __reduce__(self) -> Any:
        # The key never travels: a proxy passed in a call is rebuilt from its URI with the
        # receiving side's MINIPOOL_AUTHKEY (as a Pyro4 proxy is rebuilt from its URI).
        return _rebuild, (self._uri, self._name_server, self._timeout)


def _rebuild(uri: str, name_server: str | None, timeout: float | None) -> Proxy:
    return Proxy(uri, name_server=name_server, timeout=timeout)
