"""A write-ahead journal with snapshots: Redis's AOF + RDB persistence in miniature.

Technique (seed 001's recovery log, seed 000 §2.2-2.3 on state and backups): a process that
keeps its state in memory survives a crash by writing every change to an append-only log
*before* acting on it, and by writing a compact snapshot now and then so the log need not grow
forever. On restart it loads the newest snapshot and replays the log written after it. This is
exactly how Redis combines its append-only file (AOF) with its RDB snapshots.

Files in the journal directory (``G`` is a generation number, zero-padded to 8 digits)::

    journal.G.snap   magic "MPJS" | version u16 | generation u64 | length u64 | crc32 u32 | state
    journal.G.log    magic "MPJL" | version u16 | generation u64 | record | record | ...
    record           length u32 | crc32(length + payload) u32 | payload

Snapshot ``G`` holds the state as of the moment log ``G`` was started, so replay is "newest valid
snapshot, then the logs of generations G, G+1, ..." (generation 0 has no snapshot). Rotating to
a new generation is ordered so that a crash at any step leaves a recoverable directory: the
snapshot is written to a ``.tmp`` file, fsynced, renamed into place and the directory fsynced;
only then does log ``G`` begin and the older files go. A crash before the rename leaves a stray
``.tmp`` (ignored and removed); a crash after it leaves a snapshot without its log (an empty
log, which is fine) plus stale older files (ignored and removed).

Each record carries its length and a CRC32, so a torn write (the process died mid-``write``) or a
flipped bit is detected: replay keeps the valid prefix, stops at the first bad record, and says
in ``Replay.damage`` what it found where. Nothing after the damage is trusted. Opening the
journal for appending cuts the bad tail off (with a logged warning) so new records follow the
valid prefix.

Durability follows Redis's ``appendfsync``:

* ``"always"``: ``append`` returns only once the record is on disk. fsync costs milliseconds,
  so concurrent appenders share one: the first becomes the *leader*, writes every queued record
  and fsyncs once, then wakes all the appenders it covered (group commit, as in databases).
* ``"everysec"``: each record is written to the OS at once (a killed process loses nothing) and
  a background thread fsyncs once a second (a machine crash loses at most about a second).
* ``"no"``: records are written to the OS, which flushes when it likes.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import MinipoolError

__all__ = ["Journal", "Replay", "JournalError", "read_journal", "FSYNC_POLICIES"]

log = logging.getLogger("minipool.journal")

FSYNC_POLICIES = ("always", "everysec", "no")
FORMAT_VERSION = 1
LOG_MAGIC = b"MPJL"
SNAP_MAGIC = b"MPJS"
LOG_HEADER = struct.Struct(">4sHQ")          # magic, version, generation
SNAP_HEADER = struct.Struct(">4sHQQI")       # magic, version, generation, length, crc32
RECORD_HEADER = struct.Struct(">II")         # length, crc32 over length bytes + payload
MAX_RECORD = 2**32 - 1
EVERYSEC_INTERVAL = 1.0


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
class _Scan:
    """A replay plus where it ended, which is what ``Journal`` needs to repair the directory."""

    replay: Replay
    base_generation: int
    chain: list[tuple[int, Path, int]]          # (generation, path, valid length) of each log
    damaged_log: Path | None = None             # the log whose tail is bad (the last in chain)
    discard: tuple[Path, ...] = ()              # files not part of the valid chain


def _encode(record: bytes) -> bytes:
    if len(record) > MAX_RECORD:
        raise ValueError(f"a journal record is limited to {MAX_RECORD} bytes")
    length = struct.pack(">I", len(record))
    return length + struct.pack(">I", zlib.crc32(record, zlib.crc32(length))) + record


def _log_path(directory: Path, name: str, generation: int) -> Path:
    return directory / f"{name}.{generation:08d}.log"


def _snap_path(directory: Path, name: str, generation: int) -> Path:
    return directory / f"{name}.{generation:08d}.snap"


def _list(directory: Path, name: str) -> tuple[dict[int, Path], dict[int, Path]]:
    pattern = re.compile(re.escape(name) + r"\.(\d{8})\.(log|snap)")
    logs: dict[int, Path] = {}
    snaps: dict[int, Path] = {}
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if match:
            (logs if match[2] == "log" else snaps)[int(match[1])] = path
    return logs, snaps


def _read_snapshot(path: Path, generation: int) -> tuple[bytes | None, str | None]:
    """The state in a snapshot file, or ``(None, what is wrong with it)``."""
    data = path.read_bytes()
    if len(data) < SNAP_HEADER.size:
        return None, f"{path.name}: truncated header ({len(data)} bytes)"
    magic, version, gen, length, crc = SNAP_HEADER.unpack_from(data)
    if magic != SNAP_MAGIC or version != FORMAT_VERSION or gen != generation:
        return None, f"{path.name}: not a version {FORMAT_VERSION} snapshot of generation {generation}"
    state = data[SNAP_HEADER.size:]
    if len(state) != length or zlib.crc32(state) != crc:
        return None, f"{path.name}: checksum mismatch (truncated or corrupted)"
    return state, None


def _read_log(path: Path, generation: int, out: list[bytes]) -> tuple[int, str | None]:
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
            return offset, f"{path.name} at offset {offset}: truncated record ({length} bytes announced, {end - start} present)"
        payload = data[start:start + length]
        if zlib.crc32(payload, zlib.crc32(data[offset:offset + 4])) != crc:
            return offset, f"{path.name} at offset {offset}: record checksum mismatch"
        out.append(payload)
        offset = start + length
    return offset, None


def _scan(directory: Path, name: str) -> _Scan:
    logs, snaps = _list(directory, name)
    problems: list[str] = []
    discard: list[Path] = []
    base, state = 0, None
    for generation in sorted(snaps, reverse=True):
        state, problem = _read_snapshot(snaps[generation], generation)
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
        valid, problem = _read_log(logs[generation], generation, records)
        chain.append((generation, logs[generation], valid))
        if problem:
            problems.append(f"{problem} (kept {len(records)} records before it)")
            damaged_log = logs[generation]
            discard.extend(logs[g] for g in following[index + 1:])
            break
    damage = "; ".join(problems) or None
    return _Scan(Replay(state, records, damage), base, chain, damaged_log, tuple(discard))


def read_journal(directory: str | os.PathLike[str], *, name: str = "journal") -> Replay:
    """Read a journal directory without opening it for appending (nothing is changed on disk)."""
    return _scan(Path(directory), name).replay


def _fsync_directory(directory: Path) -> None:
    # A rename or a new file is durable only once its directory entry is; POSIX only.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Journal:
    """An append-only record log with snapshots; thread-safe.

    Args:
        directory: where the files live (created if missing).
        fsync: ``"always"``, ``"everysec"`` or ``"no"``, as Redis's ``appendfsync``.
        name: the file name prefix, so several journals may share a directory.

    Raises:
        ValueError: for an unknown fsync policy.
        OSError: when the directory cannot be created or read.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: str = "everysec",
                 name: str = "journal") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"unknown fsync policy {fsync!r}; expected one of {', '.join(FSYNC_POLICIES)}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.name = name
        self.directory.mkdir(parents=True, exist_ok=True)
        self._io_lock = threading.Lock()            # serializes writes, fsyncs and rotation
        self._cond = threading.Condition()          # guards the group-commit queue below
        self._pending: list[bytes] = []
        self._appended = 0                          # records queued so far ("always")
        self._durable = 0                           # records fsynced so far ("always")
        self._leading = False
        self._failure: BaseException | None = None
        self._closed = False
        self._dirty = False
        self._open_damage, self._generation = self._recover()
        self._fd = os.open(_log_path(self.directory, name, self._generation),
                           os.O_WRONLY | os.O_APPEND)
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if fsync == "everysec":
            self._syncer = threading.Thread(target=self._sync_every_second,
                                            name=f"journal-fsync-{name}", daemon=True)
            self._syncer.start()

    # -- opening: repair the directory so appends follow the valid prefix -------------------

    def _recover(self) -> tuple[str | None, int]:
        for tmp in self.directory.glob(f"{self.name}.*.tmp"):
            tmp.unlink()                            # a snapshot that never got renamed
        scan = _scan(self.directory, self.name)
        if scan.replay.damage:
            log.warning("journal %s: %s", self.directory, scan.replay.damage)
        for path in scan.discard:                   # kept aside for a human, never replayed
            log.warning("journal %s: setting aside %s", self.directory, path.name)
            path.rename(path.with_name(path.name + ".damaged"))
        if scan.damaged_log is not None:
            generation, path, valid = scan.chain[-1]
            log.warning("journal %s: truncating %s to its valid %d bytes",
                        self.directory, path.name, valid)
            if valid < LOG_HEADER.size:
                self._create_log(generation)
            else:
                os.truncate(path, valid)
        if scan.chain:
            generation = scan.chain[-1][0]
        else:
            generation = scan.base_generation
            self._create_log(generation)
        self._remove_older_than(scan.base_generation)
        return scan.replay.damage, generation

    def _create_log(self, generation: int) -> None:
        path = _log_path(self.directory, self.name, generation)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, LOG_HEADER.pack(LOG_MAGIC, FORMAT_VERSION, generation))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_directory(self.directory)

    def _remove_older_than(self, generation: int) -> None:
        logs, snaps = _list(self.directory, self.name)
        for files in (logs, snaps):
            for gen, path in files.items():
                if gen < generation:
                    path.unlink()

    # -- appending ---------------------------------------------------------------------------

    def append(self, record: bytes) -> None:
        """Append one record; with ``fsync="always"`` return only once it is on disk.

        Raises:
            JournalError: the journal is closed, or writing it failed.
            ValueError: the record is larger than 4 GiB.
        """
        self.append_many([record])

    def append_many(self, records: list[bytes]) -> None:
        """Append records in order, as one write (and one fsync with ``"always"``).

        Raises:
            JournalError: the journal is closed, or writing it failed.
        """
        frames = b"".join(_encode(bytes(r)) for r in records)
        if self.fsync != "always":
            with self._io_lock:
                self._check_usable()
                self._write(frames)
                self._dirty = True
            return
        with self._cond:
            self._check_usable()
            self._pending.append(frames)
            self._appended += 1
            ticket = self._appended
            while self._durable < ticket:
                if self._failure is not None:
                    raise JournalError("journal write failed") from self._failure
                if not self._leading:
                    self._leading = True
                    break
                self._cond.wait()
            else:
                return
        try:                                         # this thread leads one group commit
            self._commit()
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()

    def _commit(self) -> None:
        """Write every queued record and fsync once; wake the appenders it covered."""
        with self._io_lock:
            with self._cond:
                batch, self._pending = self._pending, []
                covered = self._appended
            try:
                if batch:
                    self._write(b"".join(batch))
                os.fsync(self._fd)
                self._dirty = False
            except OSError as exc:
                with self._cond:
                    self._failure = exc
                    self._cond.notify_all()
                raise JournalError(f"journal write failed: {exc}") from exc
            with self._cond:
                self._durable = max(self._durable, covered)

    def _write(self, data: bytes) -> None:
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self._failure = exc
            raise JournalError(f"journal write failed: {exc}") from exc

    def _check_usable(self) -> None:
        if self._closed:
            raise JournalError("the journal is closed")
        if self._failure is not None:
            # Like Redis after a failed AOF write: refuse further writes, never pretend.
            raise JournalError("an earlier journal write failed") from self._failure

    def flush(self) -> None:
        """Write anything queued and fsync the log now, whatever the policy.

        Raises:
            JournalError: the journal is closed, or writing it failed.
        """
        with self._cond:
            self._check_usable()
        self._commit()

    def _sync_every_second(self) -> None:
        while not self._stop.wait(EVERYSEC_INTERVAL):
            with self._io_lock:
                if not self._dirty or self._closed:
                    continue
                self._dirty = False
                fd = os.dup(self._fd)                # fsync outside the lock: appends go on
            try:
                os.fsync(fd)
            except OSError as exc:
                log.error("journal %s: background fsync failed: %s", self.directory, exc)
                self._failure = exc
            finally:
                os.close(fd)

    # -- snapshots and replay ----------------------------------------------------------------

    def snapshot(self, state: bytes) -> None:
        """Durably store ``state`` as the new base and start a fresh, empty log after it.

        ``state`` must reflect every record appended before this call; records appended
        while it runs may land on either side, so callers snapshot from one thread.

        Raises:
            JournalError: the journal is closed, or writing it failed.
        """
        state = bytes(state)
        self.flush()
        with self._io_lock:
            self._check_usable()
            generation = self._generation + 1
            final = _snap_path(self.directory, self.name, generation)
            tmp = final.with_name(final.name + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(SNAP_HEADER.pack(SNAP_MAGIC, FORMAT_VERSION, generation,
                                             len(state), zlib.crc32(state)))
                    f.write(state)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
                _fsync_directory(self.directory)     # from here on the snapshot is the base
                self._create_log(generation)
                fd = os.open(_log_path(self.directory, self.name, generation),
                             os.O_WRONLY | os.O_APPEND)
            except OSError as exc:
                raise JournalError(f"journal snapshot failed: {exc}") from exc
            os.close(self._fd)
            self._fd, self._generation = fd, generation
            self._remove_older_than(generation)

    def replay(self) -> Replay:
        """The newest valid snapshot and every record after it, as now on disk.

        Damage found when the journal was opened (and then cut off) is still reported.
        """
        with self._io_lock:
            result = _scan(self.directory, self.name).replay
        if result.damage is None:
            result.damage = self._open_damage
        return result

    def close(self) -> None:
        """Flush, fsync and close the log; further appends raise ``JournalError``."""
        if self._closed:
            return
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        try:
            if self._failure is None:
                self.flush()
        finally:
            with self._io_lock:
                self._closed = True
                os.close(self._fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {str(self.directory)!r} fsync={self.fsync} generation={self._generation}>"
