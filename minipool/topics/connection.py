"""How a producer or a consumer reaches the coordinator's topics: over any transport, or by a
method call to an embedded pool's coordinator.

Technique: *reuse the client's session*. A topic client is a :class:`~minipool.client.
RemoteClient` (the same handshake, heartbeats, transports, TLS and reconnection as the pool)
that also understands the topic replies, or a :class:`~minipool.client.LocalClient` for
``Pool()``'s own coordinator. When the connection drops, every request still waiting fails at
once with ``ConnectionClosed``, so the caller resends it on the new connection instead of
waiting out a timeout: :func:`retrying` is that loop, used by every request.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..client import Client, LocalClient, RemoteClient
from ..cluster.session import Backoff, shared_key
from ..errors import ConnectionClosed, MinipoolError, TopicError
from ..tls import client_context
from ..wire import Kind, Message

__all__ = ["TopicClient", "RemoteTopicClient", "LocalTopicClient", "connect", "retrying", "request", "settle"]

T = TypeVar("T")
_REPLIES = (Kind.TOPIC_ACKS, Kind.TOPIC_RECORDS, Kind.TOPIC_REPLY, Kind.TOPIC_ERROR)


def settle(client: Client, msg: Message) -> bool:
    """Settle the request a topic reply answers; False if ``msg`` is not one."""
    if msg.kind not in _REPLIES:
        return False
    future = client.forget(msg.id)
    if future is None or future.done():
        return True
    if msg.kind is Kind.TOPIC_ERROR:
        future.set_exception(TopicError(str(msg.headers.get("reason", "refused by the coordinator"))))
    elif msg.kind is Kind.TOPIC_RECORDS:
        future.set_result(msg.body)
    else:
        future.set_result(json.loads(msg.body))
    return True


class RemoteTopicClient(RemoteClient):
    """A client of a coordinator's topics over a transport."""

    def on_message(self, msg: Message) -> None:
        if not settle(self, msg):
            super().on_message(msg)

    def _reconnect(self) -> bool:
        # What was asked on the lost connection will never be answered: fail it now, so that
        # its caller asks again once the new connection is up.
        self.fail_all(ConnectionClosed(f"lost the connection to {self.url}"))
        return super()._reconnect()


class LocalTopicClient(LocalClient):
    """A client of an embedded coordinator's topics, by method calls."""

    def on_message(self, msg: Message) -> None:
        if not settle(self, msg):
            super().on_message(msg)


TopicClient = RemoteTopicClient | LocalTopicClient


def connect(
    address: str | None,
    pool: Any,
    authkey: bytes | str | None,
    reconnect_timeout: float,
    options: dict[str, Any],
) -> TopicClient:
    """A topic client of ``pool``'s embedded coordinator, or of the one at ``address``.

    Raises:
        ValueError: neither is given, or there is no key for ``address``.
    """
    if pool is not None and getattr(pool, "coordinator", None) is not None:
        return LocalTopicClient(pool.coordinator)
    if address is None and pool is not None:
        address = pool.address
    if address is None:
        raise ValueError("give address= (a coordinator's URL) or pool= (a Pool)")
    key = shared_key(authkey)
    if not key:
        raise ValueError(f"connecting to {address} needs authkey= or MINIPOOL_AUTHKEY")
    cafile = options.pop("cafile", None)
    if cafile:  # as Pool(address=..., cafile=...) takes it
        options.setdefault("ssl_context", client_context(cafile))
    return RemoteTopicClient(address, key, reconnect_timeout=reconnect_timeout, **options)


def retrying(client: TopicClient, deadline_after: float, call: Callable[[], T]) -> T:
    """``call()``, again after each lost connection until ``deadline_after`` seconds have gone.

    Raises:
        TopicError: the coordinator refused the request (not retried: it would be again).
        ConnectionClosed: the coordinator could not be reached again in time.
    """
    deadline = time.monotonic() + deadline_after
    backoff = Backoff(0.02, 1.0)
    while True:
        try:
            return call()
        except TopicError:
            raise
        except (MinipoolError, OSError, concurrent.futures.TimeoutError) as exc:
            if client.closed or time.monotonic() >= deadline:
                raise ConnectionClosed(f"the coordinator's topics cannot be reached: {exc}") from exc
            time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))


def request(
    client: TopicClient, kind: Kind, headers: dict[str, Any], timeout: float, body: bytes = b""
) -> Any:
    """One topic request, answered (or raising) within ``timeout`` seconds."""
    number, future = client.ask(kind, headers, body)
    try:
        return future.result(timeout)
    finally:
        client.forget(number)
