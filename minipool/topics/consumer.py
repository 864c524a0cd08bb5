"""The consumer: records out of a topic, alone (replay from any offset) or in a group.

Technique: *pull with a long poll and acknowledgements that ride on the next pull*. A consumer
asks for at most ``max_records`` records (its credit: the coordinator never pushes more than it
asked for, so a slow consumer slows only itself), and the coordinator holds the question open
for up to ``wait`` seconds when there is nothing yet. In a group, the records a loop has
finished with are acknowledged in the next fetch (``auto_commit``, Kafka's default), so a
record counts as processed only once the loop has asked for the one after it: a consumer that
dies mid-record has it redelivered to another member (at-least-once). Without a group the
consumer keeps its own position per partition, and ``seek`` replays from any offset.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..errors import TopicError
from ..wire import Kind
from .connection import connect, request, retrying
from .records import Record, check_topic_name, unpack_chunks

__all__ = ["Consumer"]


class Consumer:
    """Reads one topic of a coordinator.

    Args:
        topic: the topic (created on first use, like a producer's).
        address: the coordinator's URL (any transport; ``authkey=`` or ``MINIPOOL_AUTHKEY``).
        pool: a :class:`~minipool.Pool` whose embedded coordinator to use instead.
        group: a consumer group: each record goes to one member, positions are kept by the
            coordinator. ``None``: read alone, from a position of your own.
        auto_offset_reset: where a new group (or a consumer without one) starts: ``"earliest"``
            (the oldest record held) or ``"latest"`` (only records appended from now on).
        auto_commit: acknowledge records when the next ones are fetched (else call
            :meth:`commit`).
        timeout: iteration ends after this many seconds without a record (``None``: never).
        max_records: the most records one fetch brings (the consumer's credit).
        wait: seconds a fetch waits at the coordinator for records to arrive (long poll).
    """

    def __init__(
        self,
        topic: str,
        *,
        address: str | None = None,
        pool: Any = None,
        authkey: bytes | str | None = None,
        group: str | None = None,
        auto_offset_reset: str = "latest",
        auto_commit: bool = True,
        timeout: float | None = None,
        max_records: int = 500,
        max_bytes: int = 1 << 20,
        wait: float = 0.5,
        reconnect_timeout: float = 60.0,
        **transport_options: Any,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be 'earliest' or 'latest', not {auto_offset_reset!r}")
        if group is not None and (not isinstance(group, str) or not group):
            raise ValueError(f"{group!r} is not a group name")
        self.topic = check_topic_name(topic)
        self.group = group
        self.auto_offset_reset = auto_offset_reset
        self.auto_commit = auto_commit
        self.timeout = timeout
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.wait = wait
        self.reconnect_timeout = reconnect_timeout
        self.closed = False
        self.client = connect(address, pool, authkey, reconnect_timeout, transport_options)
        self._buffer: deque[Record] = deque()
        self._unacked: list[list[int]] = []  # [partition, first, end]: handed out, unacknowledged
        self._positions: list[int] = []
        if group is None:
            bounds = self._admin({"op": "bounds", "topic": self.topic})
            self._positions = [start if auto_offset_reset == "earliest" else end for start, end in bounds]
        else:  # a member from now on: the partitions are shared out again at once
            self._admin({"op": "join", "topic": self.topic, "group": group, "reset": auto_offset_reset})

    # -- reading -------------------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> list[Record]:
        """The records that arrive within ``timeout`` seconds (``None``: wait until some do),
        at most ``max_records``; ``[]`` if none did. In a group with ``auto_commit``, the
        records returned by the previous call are acknowledged now."""
        if not self._buffer:
            self._buffer.extend(self._fetch_within(timeout))
        records = list(self._buffer)
        self._buffer.clear()
        self._hand_out(records)
        return records

    def __iter__(self) -> Iterator[Record]:
        """Every record, as it arrives; ends after ``timeout`` idle seconds, or on close."""
        while not self.closed:
            if not self._buffer:
                self._buffer.extend(self._fetch_within(self.timeout))
                if not self._buffer:
                    return
            record = self._buffer.popleft()
            self._hand_out([record])
            yield record

    def _hand_out(self, records: list[Record]) -> None:
        """``records`` are the caller's now: in a group they count as processed from the next
        fetch on; a consumer without a group moves past them."""
        for record in records:
            if self.group is None:
                self._positions[record.partition] = record.offset + 1
            else:
                last = self._unacked[-1] if self._unacked else None
                if last is not None and last[0] == record.partition and last[2] == record.offset:
                    last[2] += 1  # ranges: a thousand records are acknowledged in a few bytes
                else:
                    self._unacked.append([record.partition, record.offset, record.offset + 1])

    def _fetch_within(self, timeout: float | None) -> list[Record]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.closed:
            left = self.wait if deadline is None else max(0.0, min(self.wait, deadline - time.monotonic()))
            records = self._fetch(left)
            if records or (deadline is not None and time.monotonic() >= deadline):
                return records
        return []

    def _fetch(self, wait: float) -> list[Record]:
        headers: dict[str, Any] = {
            "topic": self.topic,
            "max": self.max_records,
            "bytes": self.max_bytes,
            "wait": round(wait, 3),
        }
        if self.group is None:
            headers["positions"] = self._positions
        else:
            headers.update(group=self.group, reset=self.auto_offset_reset)
            if self.auto_commit:
                headers["acks"] = self._unacked
        body = retrying(
            self.client,
            self.reconnect_timeout,
            lambda: request(self.client, Kind.TOPIC_FETCH, headers, wait + 30.0),
        )
        if self.group is not None and self.auto_commit:
            self._unacked = []
        return unpack_chunks(self.topic, body)

    # -- positions -----------------------------------------------------------------------------

    def commit(self) -> None:
        """Acknowledge every record handed out so far; returns once the coordinator has
        recorded the group's new position.

        Raises:
            TopicError: the consumer has no group (its position is its own: see :meth:`seek`).
        """
        if self.group is None:
            raise TopicError("commit() needs a group: a consumer without one keeps its own position")
        acks, self._unacked = self._unacked, []
        if acks:
            self._admin({"op": "commit", "topic": self.topic, "group": self.group, "acks": acks})

    def seek(self, offset: int, partition: int = 0) -> None:
        """Read ``partition`` from ``offset`` next (replay). An offset before the oldest record
        held starts at the oldest. In a group this moves the group's position.

        Raises:
            TopicError: ``offset`` is beyond the end of the partition, or there is no such
            partition.
        """
        _, _, where = self._admin(
            {"op": "seek", "topic": self.topic, "partition": partition, "offset": offset, "group": self.group}
        )
        self._buffer = deque(r for r in self._buffer if r.partition != partition)
        if self.group is None:
            self._positions[partition] = where
        else:
            self._unacked = [a for a in self._unacked if a[0] != partition]

    def positions(self) -> list[int]:
        """The next offset to read in each partition (a consumer without a group)."""
        return list(self._positions)

    def _admin(self, headers: dict[str, Any]) -> Any:
        return retrying(
            self.client, self.reconnect_timeout, lambda: request(self.client, Kind.TOPIC_ADMIN, headers, 30.0)
        )

    def close(self) -> None:
        """Acknowledge what was processed (with ``auto_commit``), leave the group (its records
        go to the others at once) and disconnect."""
        if self.closed:
            return
        try:
            if self.group is not None:
                self._buffer.clear()
                if self.auto_commit:
                    self.commit()
                self._admin({"op": "leave", "topic": self.topic, "group": self.group})
        except Exception:  # noqa: BLE001 - the coordinator is gone: leaving is implied
            pass
        finally:
            self.closed = True
            self.client.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
