"""The client side of remote objects: a :class:`Proxy` stands in for one of them.

Technique: *a local stand-in* (Pyro4's proxy). ``proxy.method(*args)`` becomes a SUBMIT on one
connection, opened at the first call and reused; the answer's exception, if any, is raised
here with the remote traceback. A ``name:`` URI is looked up again each time a connection is
opened, so a proxy follows a name to whichever daemon serves it now.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urldefrag

from ..cluster.session import open_connection
from ..errors import ConnectionClosed, ProtocolError
from ..task import pack_invocation, unpack_outcome
from ..transports.base import Connection
from ..wire import Buffer, Format, Kind, decode, encode_buffers, encode_gathered
from .calls import carries_large, gathered, required_key
from .names import locate

__all__ = ["Proxy"]


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
        self._key = required_key(authkey)
        # A large reply is received into the connection's spare buffer (measured: no page
        # faults for a fresh megabyte per call): the proxy keeps no reply past its call.
        self._options = {"reuse_buffer": True, **transport_options}
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
        parts = gathered(call) if carries_large(args, kwargs) else None
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
