"""The client end of the pool: turn calls into SUBMIT messages and results into resolved futures.

Technique: *futures as the client's view of remote work* (concurrent.futures, SCOOP's futures,
Celery's AsyncResult). The client keeps one table, task id -> :class:`TaskFuture`. Submitting
adds an entry and sends a SUBMIT; a RESULT or FAILURE removes the entry and resolves the
future. That table is the whole protocol state of a client, which is why it is easy to make
delivery exactly-once: a second result for an id that is no longer in the table is dropped.

Two ways to reach the coordinator share this logic:

* :class:`RemoteClient` -- over a transport connection, with a reader thread and heartbeats;
* :class:`LocalClient` -- in the coordinator's own process (the embedded ``Pool()``): messages
  are handed over by a method call, the way ZeroMQ's ``inproc://`` skips the network stack.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from . import task as tasklib
from .cluster.coordinator import Coordinator
from .cluster.session import HEARTBEAT, LIVENESS, Outbox, open_connection
from .cluster.state import LocalClientState
from .errors import ConnectionClosed, MinipoolError
from .wire import Format, Kind, Message, decode, encode

__all__ = ["TaskFuture", "Client", "RemoteClient", "LocalClient"]

log = logging.getLogger("minipool.client")


class TaskFuture(concurrent.futures.Future):
    """A :class:`concurrent.futures.Future` that knows its task id and cancels remotely too."""

    def __init__(self, client: Client, number: int) -> None:
        super().__init__()
        self._client = client
        self.number = number
        self.task_id = f"{client.client_id}-{number}"

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._client._forget(self.number, cancel=True)
        return True


class Client:
    """The future table and outcome decoding shared by local and remote clients."""

    def __init__(self) -> None:
        self.client_id = uuid.uuid4().hex[:16]
        self._numbers = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self.closed = False

    def hello(self) -> dict[str, Any]:
        return {"role": "client", "client": self.client_id, "pid": os.getpid(),
                "host": socket.gethostname()}

    # -- sending -----------------------------------------------------------------------------

    def submit(self, body: bytes, codec: str = "none", headers: dict[str, Any] | None = None) -> TaskFuture:
        """Send one task body; return the future that its outcome will resolve."""
        if self.closed:
            raise RuntimeError("cannot submit: the client is closed")
        number = next(self._numbers)
        future = TaskFuture(self, number)
        with self._lock:
            self._pending[number] = future
        self._send(Message(Kind.SUBMIT, number, body, fmt=Format.PICKLE, codec=codec, headers=headers))
        return future

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ask the coordinator for its status report."""
        number = next(self._numbers)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._pending[number] = future
        self._send(Message(Kind.STATUS, number))
        try:
            return future.result(timeout)
        finally:
            self._forget(number)

    def _forget(self, number: int, cancel: bool = False) -> None:
        with self._lock:
            present = self._pending.pop(number, None) is not None
        if cancel and present and not self.closed:
            self._send(Message(Kind.CANCEL, number))

    def _send(self, message: Message) -> None:
        raise NotImplementedError

    # -- receiving ---------------------------------------------------------------------------

    def on_message(self, msg: Message) -> None:
        """Resolve the future a RESULT, FAILURE or STATUS_REPLY is for."""
        kind = msg.kind
        if kind is Kind.HEARTBEAT:
            return
        with self._lock:
            future = self._pending.pop(msg.id, None)
        if future is None or future.done():
            return  # cancelled, or a duplicate delivery
        try:
            if kind is Kind.RESULT:
                ok, value = tasklib.unpack_outcome(True, msg.body, msg.codec)
            elif kind is Kind.FAILURE:
                if msg.fmt is Format.JSON:
                    ok, value = False, tasklib.failure_from_json(json.loads(msg.body))
                else:
                    ok, value = tasklib.unpack_outcome(False, msg.body, msg.codec)
            elif kind is Kind.STATUS_REPLY:
                ok, value = True, json.loads(msg.body)
            else:
                ok, value = False, MinipoolError(f"unexpected {kind.name} from the coordinator")
        except Exception as exc:  # noqa: BLE001 - a result that does not unpickle fails its task
            ok, value = False, exc
        try:
            future.set_result(value) if ok else future.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled by the user at this very moment

    def fail_all(self, exc: BaseException) -> None:
        """Fail every pending future (the connection to the coordinator is gone)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                try:
                    future.set_exception(exc)
                except concurrent.futures.InvalidStateError:
                    pass

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self.closed = True


class LocalClient(Client):
    """A client in the coordinator's process: no socket, no encoding of the envelope."""

    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__()
        self._coordinator = coordinator
        self._state = LocalClientState(self.client_id, self.on_message)
        coordinator.attach_local(self._state)

    def _send(self, message: Message) -> None:
        kind = message.kind
        if kind is Kind.SUBMIT:
            self._coordinator.submit_message(self._state, message)
        elif kind is Kind.CANCEL:
            self._coordinator.cancel(self._state, message.id)
        elif kind is Kind.STATUS:
            self.on_message(Message(Kind.STATUS_REPLY, message.id,
                                    json.dumps(self._coordinator.status()).encode(), fmt=Format.JSON))

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._coordinator.detach_local(self._state)


class RemoteClient(Client):
    """A client of a coordinator at ``url``, over any transport.

    Raises (from the constructor):
        AuthenticationError: wrong key -- promptly, never a hang.
        OSError, TimeoutError, MinipoolError: the coordinator cannot be reached or is not one.
    """

    def __init__(self, url: str, authkey: bytes, *, heartbeat: float = HEARTBEAT,
                 liveness: int = LIVENESS, timeout: float = 10.0, **transport_options: Any) -> None:
        super().__init__()
        self.url = url
        self.heartbeat = heartbeat
        self.liveness = liveness
        self._conn = open_connection(url, authkey, self.hello(), timeout=timeout, **transport_options)
        self._outbox = Outbox(self._conn)
        self._reader = threading.Thread(target=self._read, daemon=True, name="minipool-client-reader")
        self._reader.start()

    def _send(self, message: Message) -> None:
        if self._outbox.failed or self._conn.closed:
            raise ConnectionClosed(f"connection to the coordinator at {self.url} is closed")
        self._outbox.put(encode(message))

    def _read(self) -> None:
        beat = encode(Message(Kind.HEARTBEAT))
        silence = self.heartbeat * self.liveness
        last_recv = time.monotonic()
        reason: BaseException = ConnectionClosed(f"lost the connection to {self.url}")
        while True:
            try:
                data = self._conn.recv(timeout=self.heartbeat)
            except TimeoutError:
                if time.monotonic() - last_recv > silence:
                    reason = ConnectionClosed(f"coordinator at {self.url} stopped answering")
                    break
                self._outbox.put(beat)
                continue
            except ConnectionClosed:
                break
            except MinipoolError as exc:
                reason = exc
                break
            last_recv = time.monotonic()
            if time.monotonic() - self._outbox.last_send >= self.heartbeat:
                self._outbox.put(beat)
            try:
                msg = decode(data)
            except MinipoolError as exc:
                reason = exc
                break
            if msg.kind is Kind.ERROR:
                reason = ConnectionClosed(f"coordinator closed the connection: {msg.headers.get('reason')}")
                break
            self.on_message(msg)
        self._conn.close()
        if not self.closed:
            log.warning("%s", reason)
        self.fail_all(reason)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._conn.close()
            self._reader.join(timeout=5)
