"""The producer: records in, acknowledgements out, batched on the wire.

Technique: *batching with a linger*, as Kafka's producer. ``send`` only queues a record and
returns a future; one sender thread takes what has queued (waiting up to ``linger`` seconds for
more), packs each topic's records into one TOPIC_PRODUCE message, keeps a few such batches in
flight, and resolves every record's future from the one TOPIC_ACKS that answers its batch. A
thousand small records cost one round trip, not a thousand.

When the connection drops, the batches in flight are sent again, in order, once the client has
reconnected: a batch the coordinator appended just before it died is then appended twice
(at-least-once, like Kafka without idempotence); one it never got is not lost.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from typing import Any

from ..errors import MessageTooLarge, MinipoolError, TopicError
from ..wire import HEADROOM, Kind
from .connection import connect, request, retrying
from .records import FRAME_HEAD, RecordMetadata, check_topic_name, pack_entries

__all__ = ["Producer"]

#: Seconds an appended batch may take to be acknowledged before it is sent again.
REPLY_TIMEOUT = 30.0
#: The topic of a flush barrier in the send queue (no topic has an empty name).
BARRIER = ""
#: What a record adds to its key and value in a message: its frame and the envelope's room.
RECORD_OVERHEAD = FRAME_HEAD.size + 8 + HEADROOM
Entry = tuple[str, bytes | None, bytes, concurrent.futures.Future]


def as_bytes(value: Any, what: str) -> bytes:
    """A record's key or value as bytes (a str is UTF-8 encoded)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a record's {what} must be bytes or str, not {type(value).__name__}")


class Producer:
    """Appends records to the topics of a coordinator.

    Args:
        address: the coordinator's URL (any transport; ``authkey=`` or ``MINIPOOL_AUTHKEY``).
        pool: a :class:`~minipool.Pool` whose embedded coordinator to use instead.
        linger: seconds the sender waits for more records before it sends a batch.
        batch_bytes: the most a batch may hold (less if the coordinator's max_message is small).
        in_flight: batches sent before the first is acknowledged.
        reconnect_timeout: how long to keep trying after the coordinator goes away.
        transport_options: TLS contexts, ``max_message``... as for ``Pool(address=...)``.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        pool: Any = None,
        authkey: bytes | str | None = None,
        linger: float = 0.0,
        batch_bytes: int = 1 << 20,
        in_flight: int = 4,
        reconnect_timeout: float = 60.0,
        **transport_options: Any,
    ) -> None:
        self.client = connect(address, pool, authkey, reconnect_timeout, transport_options)
        self.linger = linger
        self.batch_bytes = max(1, min(batch_bytes, self.client.max_message // 4))
        self.in_flight = max(1, in_flight)
        self.reconnect_timeout = reconnect_timeout
        self.closed = False
        # send() only appends (a deque is safe without a lock, and a lock per record costs as
        # much as the rest of send); the sender thread wakes on an Event. flush() queues a
        # barrier, which the sender settles once every batch before it is settled.
        self._queue: deque[Entry] = deque()
        self._work = threading.Event()
        self._names: set[str] = set()
        self._sender = threading.Thread(target=self._run, daemon=True, name="minipool-producer")
        self._sender.start()

    def send(
        self, topic: str, value: bytes | str, key: bytes | str | None = None
    ) -> concurrent.futures.Future[RecordMetadata]:
        """Queue one record; the future resolves to its :class:`RecordMetadata` once the
        coordinator has appended it (and written it to disk, with ``fsync=always``).

        Raises:
            TopicError: ``topic`` is not a topic name. TypeError: a key or value that is not
            bytes or str. RuntimeError: the producer is closed.
        """
        if topic not in self._names:
            self._names.add(check_topic_name(topic))
        data = value if type(value) is bytes else as_bytes(value, "value")
        key_bytes = None if key is None else as_bytes(key, "key")
        future: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()
        size = len(data) + (0 if key_bytes is None else len(key_bytes)) + RECORD_OVERHEAD
        if size > self.client.max_message:
            future.set_exception(MessageTooLarge("a record", size, self.client.max_message))
            return future
        if self.closed:
            raise RuntimeError("cannot send: the producer is closed")
        self._queue.append((topic, key_bytes, data, future))
        if not self._work.is_set():
            self._work.set()
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged (or has failed).

        Raises:
            TimeoutError: ``timeout`` seconds went by first.
        """
        barrier: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()
        self._queue.append((BARRIER, None, b"", barrier))
        self._work.set()
        try:
            barrier.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"records still unacknowledged after {timeout}s") from None

    # -- the sender thread ---------------------------------------------------------------------

    def _take_batches(self) -> tuple[list[tuple[str, list[Entry]]], list[Entry]]:
        """Up to ``in_flight`` batches, and the flush barriers right after them."""
        while not self._queue:
            if self.closed:
                return [], []
            self._work.wait()
            self._work.clear()  # a record sent from here on sets it again
        if self.linger > 0 and len(self._queue) < 64:
            time.sleep(self.linger)  # more records may come: send them together
        batches: list[tuple[str, list[Entry]]] = []
        barriers: list[Entry] = []
        queue = self._queue
        while queue and len(batches) < self.in_flight:
            topic = queue[0][0]
            if topic is BARRIER:
                while queue and queue[0][0] is BARRIER:
                    barriers.append(queue.popleft())
                break
            batch: list[Entry] = []
            size = 0
            while queue and queue[0][0] == topic and (not batch or size < self.batch_bytes):
                entry = queue.popleft()
                size += len(entry[2]) + 16
                batch.append(entry)
            batches.append((topic, batch))
        return batches, barriers

    def _run(self) -> None:
        while True:
            batches, barriers = self._take_batches()
            if not batches and not barriers:
                return
            sent = []
            for topic, batch in batches:
                body = pack_entries([(key, value) for _, key, value, _ in batch])
                try:
                    asked = self.client.ask(Kind.TOPIC_PRODUCE, {"topic": topic}, body)
                except (MinipoolError, OSError):
                    asked = None  # cut off: sent again below, once reconnected
                sent.append((topic, batch, body, asked))
            for topic, batch, body, asked in sent:
                try:
                    reply = self._acknowledged(topic, body, asked)
                except Exception as exc:  # noqa: BLE001 - refused, or the coordinator is gone
                    for _, _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, _, future), partition, offset in zip(
                    batch, reply["partitions"], reply["offsets"], strict=True
                ):
                    try:
                        future.set_result(RecordMetadata(topic, partition, offset))
                    except concurrent.futures.InvalidStateError:
                        pass  # cancelled by its caller: appended all the same
            for _, _, _, barrier in barriers:
                barrier.set_result(RecordMetadata(BARRIER, -1, -1))

    def _acknowledged(
        self, topic: str, body: bytes, asked: tuple[int, concurrent.futures.Future] | None
    ) -> dict[str, Any]:
        """The coordinator's acknowledgement of a batch: its answer to ``asked``, or to the
        batch sent again if the connection was lost first.

        Raises:
            TopicError: the coordinator refused the batch. ConnectionClosed: it did not come back.
        """
        if asked is not None:
            number, future = asked
            try:
                return future.result(REPLY_TIMEOUT)
            except TopicError:
                raise
            except (MinipoolError, OSError, concurrent.futures.TimeoutError):
                pass  # lost with the connection: send it again
            finally:
                self.client.forget(number)
        return retrying(
            self.client,
            self.reconnect_timeout,
            lambda: request(self.client, Kind.TOPIC_PRODUCE, {"topic": topic}, REPLY_TIMEOUT, body),
        )

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, wait for its acknowledgements, and disconnect."""
        if self.closed:
            return
        try:
            self.flush(timeout)
        finally:
            self.closed = True
            self._work.set()
            self._sender.join(timeout=5)
            self.client.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
