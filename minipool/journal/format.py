"""The journal's files on disk: framing, snapshot headers, and reading them back with damage.

Technique: a self-checking log format. Every record is framed with its length and a CRC32, so
a reader can tell a complete record from a torn write or a flipped bit without trusting
anything after it; every file starts with a magic number and a format version, so a reader
never mistakes another file (or a future format) for this one. This module only reads and
encodes; :mod:`.log` owns writing, fsync policies and recovery. It is the one place that knows
the layout, drawn here and in docs/cluster.md::

    NAME.G.snap   magic "MPJS" | version u16 | generation u64 | length u64 | crc32 u32 | state
    NAME.G.log    magic "MPJL" | version u16 | generation u64 | record | record | ...
    record        length u32 | crc32(length + payload) u32 | payload

A user of the journal whose snapshot is a list of records (the coordinator's tasks) packs it
with :func:`pack_records` and reads it back with :func:`unpack_records`.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import MinipoolError

__all__ = [
    "JournalError",
    "Replay",
    "Scan",
    "read_journal",
    "scan",
    "frame_record",
    "pack_records",
    "unpack_records",
    "log_path",
    "snap_path",
    "list_files",
    "FORMAT_VERSION",
    "LOG_MAGIC",
    "SNAP_MAGIC",
    "LOG_HEADER",
    "SNAP_HEADER",
    "RECORD_HEADER",
    "MAX_RECORD",
]

FORMAT_VERSION = 1
LOG_MAGIC = b"MPJL"
SNAP_MAGIC = b"MPJS"
LOG_HEADER = struct.Struct(">4sHQ")  # magic, version, generation
SNAP_HEADER = struct.Struct(">4sHQQI")  # magic, version, generation, length, crc32
RECORD_HEADER = struct.Struct(">II")  # length, crc32 over length bytes + payload
MAX_RECORD = 2**32 - 1


class JournalError(MinipoolError):
    """The journal cannot be written (disk full, I/O error) or was used after ``close``."""


@dataclass
class Replay:
    """What a journal holds: the newest valid snapshot and the records appended after it.

    ``damage`` is ``None`` for a clean journal, else a sentence naming the file, the offset and
    what was wrong there; ``records`` then holds only the valid prefix before it.
    """

    snapshot: bytes | None
    records: list[bytes]
    damage: str | None = None


@dataclass
class Scan:
    """A replay plus where it ended, which is what ``Journal`` needs to repair the directory."""

    replay: Replay
    base_generation: int
    chain: list[tuple[int, Path, int]]  # (generation, path, valid length) of each log
    damaged_log: Path | None = None  # the log whose tail is bad (the last in chain)
    discard: tuple[Path, ...] = ()  # files not part of the valid chain


def frame_record(record: bytes) -> bytes:
    """Frame one record: its length, the CRC-32 of length and record, the record (one copy)."""
    size = len(record)
    if size > MAX_RECORD:
        raise ValueError(f"a journal record is limited to {MAX_RECORD} bytes")
    return b"".join(
        (RECORD_HEADER.pack(size, zlib.crc32(record, zlib.crc32(size.to_bytes(4, "big")))), record)
    )


_LENGTH = struct.Struct(">I")


def pack_records(records: list[bytes]) -> bytes:
    """One blob of length-prefixed records: a snapshot that is a list of records."""
    return b"".join(_LENGTH.pack(len(r)) + r for r in records)


def unpack_records(blob: bytes) -> list[bytes]:
    """The records of a :func:`pack_records` blob."""
    out, pos = [], 0
    while pos < len(blob):
        (n,) = _LENGTH.unpack_from(blob, pos)
        out.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def log_path(directory: Path, name: str, generation: int) -> Path:
    return directory / f"{name}.{generation:08d}.log"


def snap_path(directory: Path, name: str, generation: int) -> Path:
    return directory / f"{name}.{generation:08d}.snap"


def list_files(directory: Path, name: str) -> tuple[dict[int, Path], dict[int, Path]]:
    pattern = re.compile(re.escape(name) + r"\.(\d{8})\.(log|snap)")
    logs: dict[int, Path] = {}
    snaps: dict[int, Path] = {}
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if match:
            (logs if match[2] == "log" else snaps)[int(match[1])] = path
    return logs, snaps


def read_snapshot(path: Path, generation: int) -> tuple[bytes | None, str | None]:
    """The state in a snapshot file, or ``(None, what is wrong with it)``."""
    data = path.read_bytes()
    if len(data) < SNAP_HEADER.size:
        return None, f"{path.name}: truncated header ({len(data)} bytes)"
    magic, version, gen, length, crc = SNAP_HEADER.unpack_from(data)
    if magic != SNAP_MAGIC or version != FORMAT_VERSION or gen != generation:
        return None, f"{path.name}: not a version {FORMAT_VERSION} snapshot of generation {generation}"
    state = data[SNAP_HEADER.size :]
    if len(state) != length or zlib.crc32(state) != crc:
        return None, f"{path.name}: checksum mismatch (truncated or corrupted)"
    return state, None


def read_log(path: Path, generation: int, out: list[bytes]) -> tuple[int, str | None]:
    """Append the valid records of one log to ``out``; return (valid length, damage or None)."""
    data = path.read_bytes()
    if len(data) < LOG_HEADER.size:
        return 0, f"{path.name} at offset 0: truncated header ({len(data)} bytes)"
    magic, version, gen = LOG_HEADER.unpack_from(data)
    if magic != LOG_MAGIC or version != FORMAT_VERSION or gen != generation:
        return 0, f"{path.name} at offset 0: not a version {FORMAT_VERSION} log of generation {generation}"
    offset, end = LOG_HEADER.size, len(data)
    while offset < end:
        if end - offset < RECORD_HEADER.size:
            return offset, f"{path.name} at offset {offset}: truncated record header"
        length, crc = RECORD_HEADER.unpack_from(data, offset)
        start = offset + RECORD_HEADER.size
        if length > end - start:
            return offset, (
                f"{path.name} at offset {offset}: truncated record"
                f" ({length} bytes announced, {end - start} present)"
            )
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(data[offset : offset + 4])) != crc:
            return offset, f"{path.name} at offset {offset}: record checksum mismatch"
        out.append(payload)
        offset = start + length
    return offset, None


def scan(directory: Path, name: str) -> Scan:
    logs, snaps = list_files(directory, name)
    problems: list[str] = []
    discard: list[Path] = []
    base, state = 0, None
    for generation in sorted(snaps, reverse=True):
        state, problem = read_snapshot(snaps[generation], generation)
        if problem is None:
            base = generation
            break
        problems.append(problem)
        discard.append(snaps[generation])
    records: list[bytes] = []
    chain: list[tuple[int, Path, int]] = []
    damaged_log = None
    following = sorted(g for g in logs if g >= base)
    for index, generation in enumerate(following):
        if generation != base + index:
            problems.append(f"{name}.{base + index:08d}.log is missing; later logs ignored")
            discard.extend(logs[g] for g in following[index:])
            break
        valid, problem = read_log(logs[generation], generation, records)
        chain.append((generation, logs[generation], valid))
        if problem:
            problems.append(f"{problem} (kept {len(records)} records before it)")
            damaged_log = logs[generation]
            discard.extend(logs[g] for g in following[index + 1 :])
            break
    damage = "; ".join(problems) or None
    return Scan(Replay(state, records, damage), base, chain, damaged_log, tuple(discard))


def read_journal(directory: str | os.PathLike[str], *, name: str = "journal") -> Replay:
    """Read a journal directory without opening it for appending (nothing is changed on disk)."""
    return scan(Path(directory), name).replay
