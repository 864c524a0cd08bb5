"""Records, their bytes, and the rules every side checks: sans-I/O.

Technique: *one record format from the producer's batch to the disk to the consumer*, as in
Kafka. A record is ``(offset, timestamp, key, value)``; the coordinator frames it once, when it
is appended, and from then on moves those exact bytes: into a segment file, out of it with one
``pread``, and onto the wire in a fetch reply. The coordinator never decodes a value, never
re-encodes a record, and a consumer checks each record's CRC-32 itself, so a record damaged on
disk is caught where it is read. Everything here turns values into bytes and bytes into values;
nothing touches a file or a socket, so the tests drive it with plain bytes (and hypothesis)::

    frame     length u32 | crc32 u32 | offset u64 | timestamp f64 | key length i32 | key | value
    entry     key length i32 | value length u32 | key | value        (a producer's batch)
    chunk     partition u32 | length u32 | frames                     (a fetch reply)

``length`` counts the bytes after the CRC; the CRC covers them all. A key length of -1 is
"no key" (``None``), which is not the empty key ``b""``.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..errors import TopicError

__all__ = [
    "check_count",
    "check_acks",
    "Record",
    "RecordMetadata",
    "FRAME_HEAD",
    "frame",
    "frame_parts",
    "Buffer",
    "frames",
    "span",
    "pack_entries",
    "unpack_entries",
    "pack_chunk",
    "unpack_chunks",
    "check_topic_name",
    "partition_for",
]

FRAME_HEAD = struct.Struct(">IIQdi")  # length, crc32, offset, timestamp, key length
_COVERED = struct.Struct(">Qdi")  # what length counts, before the key
_PREFIX = struct.Struct(">II")  # length, crc32
_ENTRY = struct.Struct(">iI")
_LENGTH_OFFSET = struct.Struct(">I4xQ")  # a frame's length and offset, skipping its CRC
_CHUNK = struct.Struct(">II")
Buffer = bytes | memoryview
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


class Record(NamedTuple):
    """One record as a consumer sees it (the fields of a ``kafka-python`` ConsumerRecord)."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes


class RecordMetadata(NamedTuple):
    """Where an acknowledged record was appended: what a producer's future resolves to."""

    topic: str
    partition: int
    offset: int


def frame(offset: int, timestamp: float, key: bytes | None, value: bytes) -> bytes:
    """The bytes of one record as stored and sent."""
    return b"".join(frame_parts(offset, timestamp, key, value))


def frame_parts(offset: int, timestamp: float, key: Buffer | None, value: Buffer) -> tuple[Buffer, ...]:
    """:func:`frame` as buffers to join: a batch of records is copied once, by its join,
    and its values may be views into the message they came in."""
    key_length = -1 if key is None else len(key)
    covered = _COVERED.pack(offset, timestamp, key_length)
    crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(covered)) if key else zlib.crc32(covered))
    head = _PREFIX.pack(_COVERED.size + max(key_length, 0) + len(value), crc)
    return (head, covered, key, value) if key else (head, covered, value)


def frames(
    data: bytes | memoryview, start: int = 0
) -> Iterator[tuple[int, int, int, float, bytes | None, bytes]]:
    """``(position, end, offset, timestamp, key, value)`` of each complete, intact frame in
    ``data`` from ``start``; stops at the first torn or damaged one (a crash mid-write)."""
    view = memoryview(data)
    size = len(view)
    head = FRAME_HEAD.size
    position = start
    while position + head <= size:
        length, crc, offset, timestamp, key_length = FRAME_HEAD.unpack_from(view, position)
        end = position + 8 + length
        if end > size or length < _COVERED.size + max(key_length, 0) or key_length < -1:
            return
        if zlib.crc32(view[position + 8 : end]) != crc:
            return
        key_end = position + head + max(key_length, 0)
        key = None if key_length < 0 else bytes(view[position + head : key_end])
        yield position, end, offset, timestamp, key, bytes(view[key_end:end])
        position = end


def span(data: bytes | memoryview, offset: int, max_bytes: int, max_records: int) -> tuple[int, int, int]:
    """``(start, end, count)``: the byte range of whole frames in ``data`` from the record at
    ``offset`` on, at most ``max_records`` and about ``max_bytes`` of them (at least one).
    Reads only the heads: the coordinator forwards frames it has not checked, and the consumer
    checks every CRC (a record damaged on disk is found where it is read). ``count`` is 0 when
    ``data`` holds no whole frame at or after ``offset``."""
    size = len(data)
    position = start = -1
    at = count = 0
    unpack = _LENGTH_OFFSET.unpack_from
    while at + 16 <= size:
        length, record_offset = unpack(data, at)
        end = at + 8 + length
        if end > size:
            break
        if record_offset >= offset:
            if start < 0:
                start = at
            elif end - start > max_bytes or count >= max_records:
                break
            count += 1
            position = end
        at = end
    return (start, position, count) if count else (0, 0, 0)


def pack_entries(entries: list[tuple[bytes | None, bytes]]) -> bytes:
    """A producer's batch of ``(key, value)`` pairs, as one message body."""
    parts = []
    for key, value in entries:
        parts.append(_ENTRY.pack(-1 if key is None else len(key), len(value)))
        if key:
            parts.append(key)
        parts.append(value)
    return b"".join(parts)


def unpack_entries(body: bytes | memoryview) -> list[tuple[Buffer | None, Buffer]]:
    """The ``(key, value)`` pairs of a producer's batch, as views into ``body``.

    Raises:
        TopicError: the body is not a sequence of whole entries.
    """
    view = memoryview(body)
    entries: list[tuple[Buffer | None, Buffer]] = []
    position, size = 0, len(view)
    while position < size:
        if position + _ENTRY.size > size:
            raise TopicError("a produce batch ends in the middle of an entry")
        key_length, value_length = _ENTRY.unpack_from(view, position)
        position += _ENTRY.size
        key_end = position + max(key_length, 0)
        end = key_end + value_length
        if key_length < -1 or end > size:
            raise TopicError("a produce batch has an entry longer than the batch")
        key = None if key_length < 0 else view[position:key_end]
        entries.append((key, view[key_end:end]))
        position = end
    return entries


def pack_chunk(partition: int, data: bytes) -> bytes:
    """Frames of one partition, headed for a fetch reply."""
    return _CHUNK.pack(partition, len(data)) + data


def unpack_chunks(topic: str, body: bytes | memoryview) -> list[Record]:
    """The records of a fetch reply, in the order sent, each checked against its CRC.

    Raises:
        TopicError: a chunk is cut short or a frame in it is damaged.
    """
    data = body if type(body) is bytes else bytes(body)
    view = memoryview(data)
    records: list[Record] = []
    append, make, unpack, crc32 = records.append, tuple.__new__, FRAME_HEAD.unpack_from, zlib.crc32
    head, covered = FRAME_HEAD.size, _COVERED.size
    position, size = 0, len(data)
    while position < size:
        if position + _CHUNK.size > size:
            raise TopicError("a fetch reply ends in the middle of a chunk head")
        partition, length = _CHUNK.unpack_from(data, position)
        at, end = position + _CHUNK.size, position + _CHUNK.size + length
        if end > size:
            raise TopicError("a fetch reply has a chunk longer than the reply")
        while at < end:  # frames(), inlined: this loop runs once per record a consumer gets
            if at + head > end:
                break
            length, crc, offset, timestamp, key_length = unpack(data, at)
            stop = at + 8 + length
            if stop > end or key_length < -1 or length < covered + max(key_length, 0):
                break
            if crc32(view[at + 8 : stop]) != crc:
                break
            key_end = at + head + max(key_length, 0)
            key = None if key_length < 0 else data[at + head : key_end]
            append(make(Record, (topic, partition, offset, timestamp, key, data[key_end:stop])))
            at = stop
        if at != end:
            raise TopicError(
                f"a damaged record in partition {partition} of {topic!r} after offset"
                f" {records[-1].offset if records else '?'}"
            )
        position = end
    return records


def check_topic_name(name: object) -> str:
    """``name`` if it can name a topic (and a directory): 1-200 of ``A-Z a-z 0-9 . _ -``.

    Raises:
        TopicError: it cannot.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise TopicError(f"{name!r} is not a topic name: use 1 to 200 letters, digits, '.', '_' or '-'")
    return name


def partition_for(key: Buffer, partitions: int) -> int:
    """The partition of a keyed record: the same in every process and every run (``hash()``
    of bytes is salted per process, CRC-32 is not), so a key's records stay in one order."""
    return zlib.crc32(key) % partitions


def check_count(value: Any, what: str, low: int, high: int) -> int:
    """``value`` if it is an integer from ``low`` to ``high`` (a request's field ``what``)."""
    if type(value) is not int or not low <= value <= high:
        raise TopicError(f"{what} must be an integer from {low} to {high}, not {value!r}")
    return value


def check_acks(value: Any) -> list[tuple[int, int, int]]:
    """``value`` as acknowledged ranges: ``[partition, first offset, end offset]`` each."""
    if not isinstance(value, list) or not all(
        isinstance(a, list) and len(a) == 3 and all(type(x) is int for x in a) for a in value
    ):
        raise TopicError("acks must be a list of [partition, first offset, end offset] ranges")
    return [(p, first, end) for p, first, end in value]
