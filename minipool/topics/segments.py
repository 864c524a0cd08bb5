"""One partition of a topic: a chain of segments, each a file of records and a sparse index.

Technique: *the log-structured storage of Kafka*, in miniature. A partition is an append-only
sequence of records numbered by offset. It is cut into segments of about ``segment_bytes``;
only the newest takes appends, and retention deletes whole segments from the old end, so
dropping a day of records is one ``unlink``, never a rewrite. Each segment keeps a *sparse*
index: one ``(offset, byte position)`` pair per :data:`INDEX_INTERVAL` bytes of records, so a
read at any offset costs a binary search, one ``pread`` and a scan of at most that many bytes,
and the index of a gigabyte of records is a few hundred kilobytes, whatever the record count.
The records themselves stay on disk: memory holds the index and nothing else.

Without a directory the same segments live in ``bytearray`` buffers, bounded by retention
like the files are, so an in-memory topic is just as bounded.

On disk, a segment is ``BASE.log`` (records framed by :mod:`.records`, each with its CRC) and
``BASE.idx`` (16-byte index entries), ``BASE`` being its first offset in 20 digits. Opening a
partition reads the indexes and scans each segment's tail from its last index entry: a torn
record at the end (the coordinator killed mid-write) is cut off, and an index entry that points
past the end (the index written, the records not) is dropped.
"""

from __future__ import annotations

import bisect
import os
import struct
from array import array
from pathlib import Path

from .records import Buffer, frame_parts, frames, span

__all__ = ["INDEX_INTERVAL", "Segment", "PartitionLog"]

#: Bytes of records between two index entries.
INDEX_INTERVAL = 4096
_INDEX_ENTRY = struct.Struct(">QQ")  # offset, position


class Segment:
    """Records ``base`` .. ``next - 1``: in a file when ``path`` is given, else in memory."""

    def __init__(self, base: int, path: Path | None) -> None:
        self.base = base
        self.next = base
        self.size = 0
        self.newest = 0.0  # the newest record's timestamp (retention by age)
        self.offsets = array("Q")  # the sparse index, in two columns
        self.positions = array("Q")
        self.path = path
        self.buffer = bytearray() if path is None else None
        self.fd = -1
        self.index_fd = -1
        if path is not None:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self.index_fd = os.open(path.with_suffix(".idx"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._recover()

    def _recover(self) -> None:
        raw = os.pread(self.index_fd, os.fstat(self.index_fd).st_size, 0)
        file_size = os.fstat(self.fd).st_size
        whole = len(raw) - len(raw) % _INDEX_ENTRY.size
        for at in range(0, whole, _INDEX_ENTRY.size):
            offset, position = _INDEX_ENTRY.unpack_from(raw, at)
            if position >= file_size:
                break
            self.offsets.append(offset)
            self.positions.append(position)
        if len(self.offsets) * _INDEX_ENTRY.size != len(raw):
            os.ftruncate(self.index_fd, len(self.offsets) * _INDEX_ENTRY.size)
        while True:
            start = self.positions[-1] if self.positions else 0
            valid = 0
            for _, stop, offset, timestamp, _, _ in frames(os.pread(self.fd, file_size - start, start)):
                self.next = offset + 1
                self.newest = timestamp
                valid = stop
            if valid or not self.positions:
                break
            # The indexed record is torn (written after its index entry): scan from the one before.
            self.offsets.pop()
            self.positions.pop()
            os.ftruncate(self.index_fd, len(self.offsets) * _INDEX_ENTRY.size)
        end = start + valid
        if end < file_size:
            os.ftruncate(self.fd, end)  # a torn write at the end: cut it off
        self.size = end

    def append(self, data: bytes, first: int, count: int, newest: float) -> None:
        position = self.size
        if self.buffer is not None:
            self.buffer += data
        else:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        # The index entry goes after its records: it never points at bytes not yet written.
        if not self.positions or position - self.positions[-1] >= INDEX_INTERVAL:
            self.offsets.append(first)
            self.positions.append(position)
            if self.index_fd >= 0:
                os.write(self.index_fd, _INDEX_ENTRY.pack(first, position))
        self.size += len(data)
        self.next = first + count
        self.newest = newest

    def cut(self, offset: int) -> None:
        """Drop the records from ``offset`` on, and any bytes past the last whole record (a
        write that failed half done): the outputs of a step that never completed (see
        :mod:`.positions`), written last, so nothing follows them."""
        end = self.size
        if offset < self.next:
            at = bisect.bisect_right(self.offsets, offset) - 1
            start = self.positions[at] if at >= 0 else 0
            for position, _, found, _, _, _ in frames(self._pread(start, self.size - start)):
                if found >= offset:
                    end = start + position
                    break
            keep = bisect.bisect_left(self.positions, end)
            del self.offsets[keep:], self.positions[keep:]
            self.next = offset
        if self.buffer is not None:
            del self.buffer[end:]
        else:
            os.ftruncate(self.fd, end)
            os.ftruncate(self.index_fd, len(self.offsets) * _INDEX_ENTRY.size)
        self.size = end

    def read(self, offset: int, max_bytes: int, max_records: int) -> tuple[bytes, int]:
        """Whole frames from ``offset`` on, at most ``max_records`` and about ``max_bytes`` of
        them (at least one), and how many records they hold."""
        at = bisect.bisect_right(self.offsets, offset) - 1
        position = self.positions[at] if at >= 0 else 0
        want = min(self.size - position, INDEX_INTERVAL + max_bytes)
        while True:
            data = self._pread(position, want)
            start, end, count = span(data, offset, max_bytes, max_records)
            if count:
                return bytes(data[start:end]), count
            if want >= self.size - position:
                return b"", 0
            # A record larger than what was read: read twice as far, until it fits.
            want = min(self.size - position, want * 2)

    def _pread(self, position: int, size: int) -> bytes | memoryview:
        if self.buffer is not None:
            return memoryview(self.buffer)[position : position + size]
        return os.pread(self.fd, size, position)

    def sync(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.fsync(self.index_fd)

    def duplicates(self) -> list[int]:
        """New descriptors of its files, to fsync without holding the topic's lock."""
        return [os.dup(self.fd), os.dup(self.index_fd)] if self.fd >= 0 else []

    def close(self) -> None:
        for fd in (self.fd, self.index_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.index_fd = -1

    def delete(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path.with_suffix(".idx").unlink(missing_ok=True)
        self.buffer = None


class PartitionLog:
    """The segments of one partition, oldest first; not thread-safe (its topic holds a lock).

    Args:
        directory: where its segment files live (``None``: in memory).
        segment_bytes: a segment this large takes no more appends.
    """

    def __init__(self, directory: Path | None, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.dirty = False
        self.segments: list[Segment] = []
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for path in sorted(directory.glob("*.log")):
                if path.stem.isdigit():
                    self.segments.append(Segment(int(path.stem), path))
        if not self.segments:
            self.segments.append(self._new_segment(0))
        self.bases = [s.base for s in self.segments]

    def _new_segment(self, base: int) -> Segment:
        path = None if self.directory is None else self.directory / f"{base:020d}.log"
        return Segment(base, path)

    @property
    def start(self) -> int:
        """The oldest offset still held."""
        return self.segments[0].base

    @property
    def end(self) -> int:
        """The offset the next record will get."""
        return self.segments[-1].next

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    def append(self, records: list[tuple[float, Buffer | None, Buffer]]) -> int:
        """Append ``(timestamp, key, value)`` records; return the first one's offset."""
        active = self.segments[-1]
        if active.size >= self.segment_bytes:
            active = self._new_segment(active.next)
            self.segments.append(active)
            self.bases.append(active.base)
        first = active.next
        parts: list[Buffer] = []
        for i, (timestamp, key, value) in enumerate(records):
            parts += frame_parts(first + i, timestamp, key, value)
        data = b"".join(parts)
        active.append(data, first, len(records), records[-1][0])
        self.dirty = True
        return first

    def read(self, offset: int, max_bytes: int, max_records: int) -> tuple[bytes, int, int]:
        """``(frames, first offset, count)`` from ``offset`` (moved up to :attr:`start` if the
        records there were dropped); empty at the end."""
        offset = max(offset, self.start)
        if offset >= self.end:
            return b"", offset, 0
        segment = self.segments[bisect.bisect_right(self.bases, offset) - 1]
        if offset >= segment.next:  # an empty active segment after a roll
            return b"", offset, 0
        data, count = segment.read(offset, max_bytes, max_records)
        return data, offset, count

    def cut(self, offset: int) -> None:
        """Drop the records from ``offset`` on (at most back to :attr:`start`)."""
        while len(self.segments) > 1 and self.segments[-1].base >= offset:
            self.segments.pop().delete()
            self.bases.pop()
        self.segments[-1].cut(max(offset, self.start))
        self.dirty = True

    def unsynced(self) -> list[int]:
        """Descriptors (new ones: the caller fsyncs and closes them, with no lock held) of the
        files appended to since the last call."""
        if not self.dirty:
            return []
        self.dirty = False
        fds = self.segments[-1].duplicates()
        if len(self.segments) > 1:
            fds += self.segments[-2].duplicates()  # rolled since the last sync, perhaps
        return fds

    def trim(self, retention_bytes: int | None, retention_seconds: float | None, now: float) -> int:
        """Delete whole segments from the old end while the partition is over its size or they
        are all older than the age limit (the active segment always stays). Returns how many
        records went."""
        dropped = 0
        total = self.size
        while len(self.segments) > 1:
            oldest = self.segments[0]
            too_big = retention_bytes is not None and total > retention_bytes
            too_old = retention_seconds is not None and oldest.newest < now - retention_seconds
            if not (too_big or too_old):
                break
            dropped += oldest.next - oldest.base
            total -= oldest.size
            oldest.delete()
            del self.segments[0], self.bases[0]
        return dropped

    def close(self) -> None:
        for segment in self.segments:
            segment.sync()
            segment.close()
