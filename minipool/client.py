"""The client end of the pool: turn calls into SUBMIT messages and results into resolved futures.

Technique: *futures as the client's view of remote work*, over a connection or in-process. The
future table and the decoding of outcomes are :class:`~minipool.futuretable.Client`'s; two ways
to reach the coordinator share them here (a third, from inside a task, is
:mod:`minipool.nested`):

* :class:`RemoteClient` -- over a transport connection, with a reader thread, heartbeats and
  *reconnection*: when the connection drops (a network blip, a coordinator restarted from its
  journal) it reconnects under the same client id and resubmits every task it is still waiting
  for. The coordinator knows tasks by ``(client id, number)``, so a resubmitted task that is
  queued, running or finished there is not run again: the client just gets its outcome;
* :class:`LocalClient` -- in the coordinator's own process (the embedded ``Pool()``): messages
  are handed over by a method call, the way ZeroMQ's ``inproc://`` skips the network stack.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

from .cluster.coordinator import Coordinator
from .cluster.outbox import Outbox
from .cluster.session import HEARTBEAT, LIVENESS, Backoff, adopt_heartbeat, open_connection, read_until_lost
from .cluster.state import LocalClientState
from .errors import AuthenticationError, ConnectionClosed, MinipoolError, ProtocolError
from .futures import TaskFuture
from .futuretable import Client
from .transports.base import DEFAULT_MAX_MESSAGE, Connection
from .wire import HEADROOM, Kind, Message, decode, encode

__all__ = ["TaskFuture", "Client", "RemoteClient", "LocalClient"]

log = logging.getLogger("minipool.client")


class LocalClient(Client):
    """A client in the coordinator's process: no socket, no encoding of the envelope."""

    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__()
        self._coordinator = coordinator
        self.max_message = coordinator.max_message  # what the workers' results must fit, too
        self._state = LocalClientState(self.client_id, self.on_message, self.resolve)
        coordinator.attach_local(self._state)

    def submit(self, body: bytes, codec: str = "none", headers: dict[str, Any] | None = None) -> TaskFuture:
        # The in-process fast path: no envelope, straight into the coordinator.
        if self.closed or self.broken:
            self._refuse()
        number = next(self._numbers)
        future = TaskFuture(self, number)
        if len(body) + HEADROOM > self.max_message and self._refuse_oversized(future, body, codec, headers):
            return future
        with self._lock:
            self._pending[number] = future
        self._coordinator.submit_local(self._state, number, body, codec, headers)
        return future

    def _send(self, message: Message) -> None:
        self._coordinator.handle_client_message(self._state, message)

    def _ask_started(self, futures: list[TaskFuture], cancel: bool) -> tuple[set[int], set[int]] | None:
        # In-process, the question is a call under the coordinator's lock: no message at all.
        started, cancelled = self._coordinator.started(self._state, [f.number for f in futures], cancel)
        return set(started), set(cancelled)

    def _take(self, number: int) -> concurrent.futures.Future | None:
        # No lock: a dict's pop is atomic, and nothing else here must change with it. (A
        # fail_all racing with it swaps the table first; the loser's set_* is refused.)
        return self._pending.pop(number, None)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._coordinator.detach_local(self._state)


class RemoteClient(Client):
    """A client of a coordinator at ``url``, over any transport.

    Args:
        reconnect_timeout: how long to keep trying to reconnect after the connection drops
            (0: fail pending futures at once).

    Raises (from the constructor):
        AuthenticationError: wrong key -- promptly, never a hang.
        OSError, TimeoutError, MinipoolError: the coordinator cannot be reached or is not one.
    """

    def __init__(
        self,
        url: str,
        authkey: bytes,
        *,
        heartbeat: float = HEARTBEAT,
        liveness: int = LIVENESS,
        timeout: float = 10.0,
        reconnect_timeout: float = 60.0,
        **transport_options: Any,
    ) -> None:
        super().__init__()
        self.url = url
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.reconnect_timeout = reconnect_timeout
        self._key = authkey
        self._timeout = timeout
        self._options = transport_options
        self.max_message = int(transport_options.get("max_message", DEFAULT_MAX_MESSAGE))
        self._unanswered: dict[int, Message] = {}  # SUBMITs to resend after a reconnect
        self._conn = self._open()
        self._outbox = Outbox(self._conn)
        self.reconnects = 0
        self._reader = threading.Thread(target=self._read, daemon=True, name="minipool-client-reader")
        self._reader.start()

    def _open(self) -> Connection:
        """Connect, authenticate, and read the coordinator's first message, the HEARTBEAT that
        announces its heartbeat and its max_message, before anything is sent: a SUBMIT too
        large for the coordinator would cost the connection, and be sent again on the next."""
        conn = open_connection(self.url, self._key, self.hello(), timeout=self._timeout, **self._options)
        try:
            first = decode(conn.recv(self._timeout))
            if first.kind is Kind.ERROR:
                raise ConnectionClosed(f"coordinator closed the connection: {first.headers.get('reason')}")
            if first.kind is not Kind.HEARTBEAT:
                raise ProtocolError(f"expected the coordinator's HEARTBEAT, got {first.kind.name}")
            adopt_heartbeat(self, first.headers)
        except BaseException:
            conn.close()
            raise
        return conn

    def _remember(self, number: int, message: Message) -> None:
        self._unanswered[number] = message

    def _take(self, number: int) -> concurrent.futures.Future | None:
        with self._lock:  # pending and unanswered change together (see _reconnect)
            self._unanswered.pop(number, None)
            return self._pending.pop(number, None)

    def _send(self, message: Message) -> None:
        outbox = self._outbox
        if outbox.failed or outbox.conn.closed:
            if message.kind is Kind.SUBMIT and self.reconnect_timeout > 0 and not self.closed:
                return  # kept in _unanswered: it goes out again once we are reconnected
            raise ConnectionClosed(f"connection to the coordinator at {self.url} is closed")
        outbox.put(encode(message))

    def _ask_started(self, futures: list[TaskFuture], cancel: bool) -> tuple[set[int], set[int]] | None:
        if threading.current_thread() is self._reader:
            return None  # a done callback on the reader: it alone could carry the answer
        return self.ask_leases(futures, cancel, self._timeout)

    def _read(self) -> None:
        while not self.closed:
            reason = self._read_until_lost()
            if self.closed:
                break
            log.warning("%s", reason)
            if self.reconnect_timeout <= 0 or not self._reconnect():
                self.fail_all(reason)
                return

    def _read_until_lost(self) -> BaseException:
        conn = self._conn
        try:
            return read_until_lost(self, conn, self._outbox, self.on_message, beats=True)
        finally:
            conn.close()

    def _reconnect(self) -> bool:
        """Reconnect under the same client id and resend what is unanswered."""
        deadline = time.monotonic() + self.reconnect_timeout
        backoff = Backoff(0.05, 2.0)
        while not self.closed and time.monotonic() < deadline:
            try:
                conn = self._open()
            except AuthenticationError:
                return False
            except (MinipoolError, OSError, TimeoutError):
                time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))
                continue
            outbox = Outbox(conn)
            with self._lock:
                self._conn, self._outbox = conn, outbox
                resend = [encode(m) for _, m in sorted(self._unanswered.items())]
            if resend:
                outbox.put_many(resend)
            self.reconnects += 1
            log.warning("reconnected to %s; resubmitted %d task(s)", self.url, len(resend))
            return True
        return False

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._conn.close()
            self._reader.join(timeout=5)
