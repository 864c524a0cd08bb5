"""The producer: records in, acknowledgements out, batched on the wire.

Technique: *batching by the round trip*, as TCP's Nagle algorithm and Kafka's producer do.
``send`` queues a record, returns a future, and sends at once if fewer than ``in_flight``
batches await their acknowledgement; otherwise the record waits, and when an acknowledgement
comes back everything that queued meanwhile leaves as one TOPIC_PRODUCE message. A lone record
goes out immediately (low latency); under load batches grow to what one round trip lets
accumulate (high throughput), with no timer to tune. There is no sender thread: the thread
that calls ``send`` sends, and the client's reader, which settles each record's future from the
one TOPIC_ACKS that answers its batch, sends the next batch. Fewer threads handing work to each
other means fewer waits for Python's GIL, which is what a dedicated sender thread cost.

``send`` blocks while ``max_queued`` records wait (Kafka's ``buffer.memory``): a producer
faster than the coordinator is slowed to its pace instead of filling its own memory.

When the connection drops, the batches in flight are sent again, in order, by a thread that
waits for the client to reconnect; new batches wait behind them. A batch the coordinator
appended just before it died is then appended twice (at-least-once, like Kafka without
idempotence); one it never got is not lost.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections import deque
from typing import Any

from ..errors import MessageTooLarge, MinipoolError, TopicError
from ..futures import LightFuture
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
Batch = tuple[int, str, list[Entry], bytes]  # sequence number, topic, records, message body


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
        bootstrap_servers: ``kafka-python``'s name for ``address`` (``"host:port"``: tcp).
        batch_bytes: the most a batch may hold (less if the coordinator's max_message is small).
        in_flight: batches sent before the first is acknowledged.
        max_queued: records waiting to be sent before ``send`` blocks.
        reconnect_timeout: how long to keep trying after the coordinator goes away.
        transport_options: TLS contexts, ``max_message``... as for ``Pool(address=...)``.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        pool: Any = None,
        bootstrap_servers: str | None = None,
        authkey: bytes | str | None = None,
        batch_bytes: int = 1 << 20,
        in_flight: int = 4,
        max_queued: int = 50_000,
        reconnect_timeout: float = 60.0,
        **transport_options: Any,
    ) -> None:
        self.client = connect(
            address or bootstrap_servers, pool, authkey, reconnect_timeout, transport_options
        )
        self.batch_bytes = max(1, min(batch_bytes, self.client.max_message // 4))
        self.in_flight = max(1, in_flight)
        self.max_queued = max(1, max_queued)
        self.reconnect_timeout = reconnect_timeout
        self.closed = False
        # send() appends without a lock (a deque is safe, and a lock per record costs as much
        # as the rest of send), then looks at _sending: the order (append, then look; settle,
        # then look at the queue) means a record is never left behind with nothing in flight.
        self._queue: deque[Entry] = deque()
        self._sending = 0  # batches sent and not yet settled
        self._sequence = 0
        self._lock = threading.Lock()  # guards the counters, _pumping and _resend
        self._pumping = False
        self._again = False
        self._resend: list[Batch] = []  # lost with a connection, to send again in order
        self._room = threading.Condition()  # send() waits on it while the queue is full
        self._names: set[str] = set()

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
        future: concurrent.futures.Future[RecordMetadata] = LightFuture()
        size = len(data) + (0 if key_bytes is None else len(key_bytes)) + RECORD_OVERHEAD
        if size > self.client.max_message:
            future.set_exception(MessageTooLarge("a record", size, self.client.max_message))
            return future
        if self.closed:
            raise RuntimeError("cannot send: the producer is closed")
        if len(self._queue) >= self.max_queued:
            with self._room:
                while len(self._queue) >= self.max_queued and not self.client.closed:
                    self._room.wait(0.1)
        self._queue.append((topic, key_bytes, data, future))
        if self._sending < self.in_flight:
            self._pump()
        return future

    @property
    def queued(self) -> int:
        """Records waiting to be sent (at most ``max_queued``)."""
        return len(self._queue)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged (or has failed).

        Raises:
            TimeoutError: ``timeout`` seconds went by first.
        """
        barrier: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()
        self._queue.append((BARRIER, None, b"", barrier))
        self._pump()
        try:
            barrier.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"records still unacknowledged after {timeout}s") from None

    # -- sending: whoever finds room sends; one thread at a time --------------------------------

    def _pump(self) -> None:
        """Send batches while fewer than ``in_flight`` are unacknowledged. A call made while
        another thread pumps (or this one, from an acknowledgement that came back at once, as
        an embedded coordinator's does) only asks it to look again."""
        with self._lock:
            if self._pumping:
                self._again = True
                return
            self._pumping = True
        try:
            while True:
                with self._lock:
                    self._again = False
                    batch = self._take() if not self._resend else None
                    if batch is None and not self._again:
                        self._pumping = False
                        return
                if batch is not None:
                    self._send(batch)
        except BaseException:
            with self._lock:
                self._pumping = False
            raise

    def _take(self) -> Batch | None:
        """The next batch to send, if there is room for one (under ``_lock``). Settles the
        flush barriers it finds once nothing before them is unsettled."""
        queue = self._queue
        while queue and queue[0][0] is BARRIER:
            if self._sending:
                return None  # the barrier waits for what is in flight
            queue.popleft()[3].set_result(RecordMetadata(BARRIER, -1, -1))
        if not queue or self._sending >= self.in_flight:
            return None
        topic = queue[0][0]
        entries: list[Entry] = []
        size = 0
        while queue and queue[0][0] == topic and (not entries or size < self.batch_bytes):
            entry = queue.popleft()
            size += len(entry[2]) + 16
            entries.append(entry)
        with self._room:
            self._room.notify_all()
        self._sending += 1
        self._sequence += 1
        return self._sequence, topic, entries, pack_entries([(key, value) for _, key, value, _ in entries])

    def _send(self, batch: Batch) -> None:
        try:
            number, future = self.client.ask(Kind.TOPIC_PRODUCE, {"topic": batch[1]}, batch[3])
        except (MinipoolError, OSError) as exc:
            self._settle(batch, None, exc)
            return
        future.add_done_callback(lambda done: self._acknowledged(batch, number, done))

    def _acknowledged(self, batch: Batch, number: int, done: concurrent.futures.Future) -> None:
        self.client.forget(number)
        exc = done.exception()
        self._settle(batch, None if exc is not None else done.result(), exc)

    def _settle(self, batch: Batch, reply: dict[str, Any] | None, exc: BaseException | None) -> None:
        """A batch's answer: resolve its records' futures, or keep it to send again if the
        connection was lost; then send what queued meanwhile."""
        if reply is not None or isinstance(exc, TopicError) or self.client.closed:
            self._resolve(batch, reply, exc)
        else:
            with self._lock:
                self._resend.append(batch)
                first = len(self._resend) == 1
            if first:
                threading.Thread(
                    target=self._send_again, daemon=True, name="minipool-producer-resend"
                ).start()
            return
        with self._lock:
            self._sending -= 1
        self._pump()

    def _resolve(self, batch: Batch, reply: dict[str, Any] | None, exc: BaseException | None) -> None:
        _, topic, entries, _ = batch
        if reply is None:
            for _, _, _, future in entries:
                if not future.done():
                    future.set_exception(exc or ConnectionError("no acknowledgement"))
            return
        for (_, _, _, future), partition, offset in zip(
            entries, reply["partitions"], reply["offsets"], strict=True
        ):
            try:
                future.set_result(RecordMetadata(topic, partition, offset))
            except concurrent.futures.InvalidStateError:
                pass  # cancelled by its caller: appended all the same

    def _send_again(self) -> None:
        """Send the batches lost with a connection, oldest first, once reconnected."""
        while True:
            with self._lock:
                if not self._resend:
                    break
                batch = min(self._resend)
            try:
                topic, body = batch[1], batch[3]
                reply = retrying(
                    self.client,
                    self.reconnect_timeout,
                    functools.partial(
                        request, self.client, Kind.TOPIC_PRODUCE, {"topic": topic}, REPLY_TIMEOUT, body
                    ),
                )
                self._resolve(batch, reply, None)
            except Exception as exc:  # noqa: BLE001 - refused, or the coordinator is gone for good
                self._resolve(batch, None, exc)
            with self._lock:
                self._resend.remove(batch)
                self._sending -= 1
        self._pump()

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, wait for its acknowledgements, and disconnect."""
        if self.closed:
            return
        try:
            self.flush(timeout)
        finally:
            self.closed = True
            self.client.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
