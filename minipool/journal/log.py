"""A write-ahead journal with snapshots: Redis's AOF + RDB persistence in miniature.

Technique (seed 001's recovery log, seed 000 §2.2-2.3 on state and backups): a process that
keeps its state in memory survives a crash by writing every change to an append-only log
*before* acting on it, and by writing a compact snapshot now and then so the log need not grow
forever. On restart it loads the newest snapshot and replays the log written after it. This is
exactly how Redis combines its append-only file (AOF) with its RDB snapshots.

The journal directory holds a snapshot ``NAME.G.snap`` and a log ``NAME.G.log`` per generation
``G`` (their layout is :mod:`.format`'s). Snapshot ``G`` holds the state as of the moment log
``G`` was started, so replay is "newest valid snapshot, then the logs of generations G, G+1,
..." (generation 0 has no snapshot). Rotating to
a new generation is ordered so that a crash at any step leaves a recoverable directory: log
``G`` begins first (appends go to it from then on), then the snapshot is written to a ``.tmp``
file, fsynced, renamed into place and the directory fsynced, and only then do the older files
go. A crash before the rename leaves a log without its snapshot (replayed from the older base
through both logs) and perhaps a stray ``.tmp`` (ignored and removed); a crash after it leaves
stale older files (ignored and removed). Only the rotation must see no append: the snapshot
itself is written while the owner's state goes on changing (:meth:`Journal.rotate`,
:meth:`Journal.write_snapshot`), so a backup does not stall the process that makes it.

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
import threading
import time
import zlib
from pathlib import Path

from .format import (
    FORMAT_VERSION,
    LOG_HEADER,
    LOG_MAGIC,
    SNAP_HEADER,
    SNAP_MAGIC,
    JournalError,
    Replay,
    frame_record,
    list_files,
    log_path,
    scan,
    snap_path,
)

__all__ = ["Journal", "FSYNC_POLICIES", "measure_appends"]

log = logging.getLogger("minipool.journal")

FSYNC_POLICIES = ("always", "everysec", "no")
EVERYSEC_INTERVAL = 1.0


def _fsync_directory(directory: Path) -> None:
    # A rename or a new file is durable only once its directory entry is; POSIX only.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_exclusively(path: Path) -> int:
    """Hold an advisory lock so that a second writer cannot interleave with this one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, run unguarded
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalError(f"{path} is held by another open journal") from None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Journal:
    """An append-only record log with snapshots; thread-safe.

    Args:
        directory: where the files live (created if missing).
        fsync: ``"always"``, ``"everysec"`` or ``"no"``, as Redis's ``appendfsync``.
        name: the file name prefix, so several journals may share a directory.

    Raises:
        ValueError: for an unknown fsync policy.
        JournalError: another ``Journal`` (in any process) has the same one open.
        OSError: when the directory cannot be created or read.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, fsync: str = "everysec", name: str = "journal"
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"unknown fsync policy {fsync!r}; expected one of {', '.join(FSYNC_POLICIES)}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.name = name
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_exclusively(self.directory / f"{name}.lock")
        self._io_lock = threading.Lock()  # serializes writes, fsyncs and rotation
        self._cond = threading.Condition()  # guards the group-commit queue below
        self._pending: list[bytes] = []
        self._appended = 0  # records queued so far ("always")
        self._durable = 0  # records fsynced so far ("always")
        self._leading = False
        self._failure: BaseException | None = None
        self._closed = False
        self._dirty = False
        try:
            self._open_damage, self._generation = self._recover()
            self._fd = os.open(log_path(self.directory, name, self._generation), os.O_WRONLY | os.O_APPEND)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if fsync == "everysec":
            self._syncer = threading.Thread(
                target=self._sync_every_second, name=f"journal-fsync-{name}", daemon=True
            )
            self._syncer.start()

    # -- opening: repair the directory so appends follow the valid prefix -------------------

    def _recover(self) -> tuple[str | None, int]:
        for tmp in self.directory.glob(f"{self.name}.*.tmp"):
            tmp.unlink()  # a file that never got renamed into place
        found = scan(self.directory, self.name)
        if found.replay.damage:
            log.warning("journal %s: %s", self.directory, found.replay.damage)
        for path in found.discard:  # kept aside for a human, never replayed
            log.warning("journal %s: setting aside %s", self.directory, path.name)
            path.rename(path.with_name(path.name + ".damaged"))
        if found.damaged_log is not None:
            generation, path, valid = found.chain[-1]
            log.warning("journal %s: truncating %s to its valid %d bytes", self.directory, path.name, valid)
            if valid < LOG_HEADER.size:
                self._create_log(generation)
            else:
                os.truncate(path, valid)
        if found.chain:
            generation = found.chain[-1][0]
        else:
            generation = found.base_generation
            self._create_log(generation)
        self._remove_older_than(found.base_generation)
        return found.replay.damage, generation

    def _create_log(self, generation: int, durable: bool = True) -> None:
        # Written aside and renamed, so a log never exists without its complete header.
        path = log_path(self.directory, self.name, generation)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, LOG_HEADER.pack(LOG_MAGIC, FORMAT_VERSION, generation))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            _fsync_directory(self.directory)

    def _remove_older_than(self, generation: int) -> None:
        logs, snaps = list_files(self.directory, self.name)
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
        frames = b"".join([frame_record(r if type(r) is bytes else bytes(r)) for r in records])
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
        try:  # this thread leads one group commit
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
                fd = os.dup(self._fd)  # fsync outside the lock: appends go on
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

        ``state`` must reflect every record appended before this call, and nothing may be
        appended while it runs (a record written to the old log just before the rotation
        would be dropped with it): take the lock that guards the state you serialize. To
        keep that lock only for an instant, use :meth:`rotate` and :meth:`write_snapshot`.

        Raises:
            JournalError: the journal is closed, or writing it failed.
        """
        self.write_snapshot(self.rotate(), state)

    def rotate(self) -> int:
        """Start the log of a new generation: records appended from now on go to it. Returns
        the generation, whose snapshot -- the state as of this call -- the caller then writes
        with :meth:`write_snapshot`, while appends go on.

        This is the part of a snapshot that must see no append (take the lock that guards
        your state, copy the state, call this, let go); it writes a header, and fsyncs only
        under ``fsync="always"`` (else the header is fsynced with the records, in the
        background). Until the snapshot is in place, a replay reads the old base and both
        logs, so a crash in between loses nothing.

        Raises:
            JournalError: the journal is closed, or writing it failed.
        """
        if self.fsync == "always":
            self.flush()  # a queued record belongs to the old log
        with self._io_lock:
            self._check_usable()
            generation = self._generation + 1
            try:
                self._create_log(generation, durable=self.fsync == "always")
                fd = os.open(log_path(self.directory, self.name, generation), os.O_WRONLY | os.O_APPEND)
            except OSError as exc:
                raise JournalError(f"journal rotation failed: {exc}") from exc
            os.close(self._fd)
            self._fd, self._generation = fd, generation
            self._dirty = True  # "everysec": its header is fsynced within the second
        return generation

    def write_snapshot(self, generation: int, state: bytes) -> None:
        """Durably store ``state`` as the base of ``generation`` (from :meth:`rotate`), then
        remove the files it replaces. Appends go on meanwhile.

        Raises:
            JournalError: the journal is closed, or writing it failed.
        """
        state = bytes(state)
        final = snap_path(self.directory, self.name, generation)
        tmp = final.with_name(final.name + ".tmp")
        with self._io_lock:
            self._check_usable()
        try:
            with open(tmp, "wb") as f:
                f.write(
                    SNAP_HEADER.pack(SNAP_MAGIC, FORMAT_VERSION, generation, len(state), zlib.crc32(state))
                )
                f.write(state)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_directory(self.directory)  # from here on the snapshot is the base
        except OSError as exc:
            raise JournalError(f"journal snapshot failed: {exc}") from exc
        self._remove_older_than(generation)  # files no append touches: no lock needed

    def replay(self) -> Replay:
        """The newest valid snapshot and every record after it, as now on disk.

        Damage found when the journal was opened (and then cut off) is still reported.
        """
        with self._io_lock:
            result = scan(self.directory, self.name).replay
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
                os.close(self._lock_fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {str(self.directory)!r} fsync={self.fsync} generation={self._generation}>"


def measure_appends(
    directory: str | os.PathLike[str], *, fsync: str, threads: int = 8, records: int = 2000, size: int = 100
) -> float:
    """Appends per second of ``threads`` threads sharing one journal (``records`` in total).

    ``python -m minipool.journal [DIR]`` prints this for every fsync policy; the
    figures in docs/cluster.md come from it.
    """
    payload = b"x" * size
    journal = Journal(directory, fsync=fsync, name=f"measure-{fsync}-{threads}")
    per_thread = records // threads

    def appender() -> None:
        for _ in range(per_thread):
            journal.append(payload)

    workers = [threading.Thread(target=appender) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    journal.close()
    return per_thread * threads / elapsed
