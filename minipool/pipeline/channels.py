"""Channels between stages: fast (a bounded in-memory queue) and durable (a journaled one).

Technique: seed 001's *exchange channels* and *fast pipes*, and its first open problem,
backpressure. A :class:`Channel` is a bounded ``queue.Queue`` of *chunks* (lists of records),
never of single records: one lock round-trip then moves up to a few hundred records, which is
what brings a thread-to-thread hop down to about a microsecond per record. Because the queue is
bounded, a slow stage blocks its producer's ``put``, which blocks *its* producer, all the way
back to the source: an endless stream runs in constant memory.

Every blocking call wakes up every 50 ms to look at the run's ``stop`` event, so a failure
anywhere shuts the whole pipeline down without a hang. A consumer that needs no more input
(``take(n)``) *abandons* its channel; the producer's next ``put`` raises :class:`Abandoned` and
that stage abandons its own input in turn, so the stop travels upstream to the source.

:class:`DurableChannel` is the durable channel (seed 001's recovery log, Redis's AOF + RDB): the
records reaching the terminal stage are appended to a :class:`minipool.journal.Journal`
together with a *marker*, the number of source records whose effects they complete, before the
terminal applies them. A periodic snapshot stores the terminal's state with that marker as its
version. On restart the newest snapshot plus the log after it rebuild the state, and the source
skips the records the marker says are done: nothing is lost, nothing is counted twice.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
from dataclasses import dataclass
from typing import Any

from ..journal import Journal
from .errors import PipelineError

__all__ = ["Channel", "Marker", "END", "Abandoned", "Cancelled", "DurableChannel"]

log = logging.getLogger("minipool.pipeline")

_POLL = 0.05


class _End:
    def __repr__(self) -> str:
        return "END"


END: Any = _End()


@dataclass(frozen=True)
class Marker:
    """In-band progress note: every record before source position ``seq`` is fully upstream.

    ``position`` is where a source that knows its place (a topic read by a consumer group)
    is after those records: a partition -> next offset mapping, ``None`` for plain iterables.
    A ``barrier`` (a durable run sends one every ``CHECKPOINT_INTERVAL``) may pass a stage that
    holds records: the stage adds its pickled state to ``states`` (Flink's aligned checkpoint
    barrier, which a linear pipeline gets for free since records never overtake markers).
    """

    seq: int
    position: Any = None
    barrier: bool = False
    states: tuple[tuple[str, bytes], ...] = ()


class Abandoned(Exception):
    """The consumer of a channel needs nothing more (internal; stops a producer quietly)."""


class Cancelled(Exception):
    """The run is stopping because of a failure elsewhere (internal; ends a thread quietly)."""


class Channel:
    """A bounded multi-producer queue of chunks, closed when its last producer closes it.

    Args:
        stop: the run's stop event, checked while blocked.
        capacity: how many chunks may wait before ``put`` blocks (the backpressure bound).
    """

    def __init__(self, stop: threading.Event, capacity: int = 8) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(capacity)
        self._stop = stop
        self._lock = threading.Lock()
        self._producers = 0
        self.abandoned = False
        self.depth = 0  # records waiting; approximate, for observability only

    def add_producer(self) -> None:
        with self._lock:
            self._producers += 1

    def put(self, message: Any) -> None:
        """Send a chunk (a list) or a :class:`Marker`; blocks while the channel is full.

        Raises:
            Abandoned: the consumer stopped reading.
            Cancelled: the run is stopping.
        """
        while True:
            if self.abandoned:
                raise Abandoned
            if self._stop.is_set():
                raise Cancelled
            try:
                self._queue.put(message, timeout=_POLL)
            except queue.Full:
                continue
            if type(message) is list:
                self.depth += len(message)
            return

    def close(self) -> None:
        """One producer is done; the last one to close sends END."""
        with self._lock:
            self._producers -= 1
            last = self._producers <= 0
        if last:
            try:
                self.put(END)
            except (Abandoned, Cancelled):
                pass

    def get(self, timeout: float | None = None) -> Any:
        """The next message, END when all producers closed, or None after ``timeout`` seconds.

        Raises:
            Cancelled: the run is stopping.
        """
        waited = 0.0
        while True:
            if self._stop.is_set():
                raise Cancelled
            step = _POLL if timeout is None else min(_POLL, timeout - waited)
            try:
                message = self._queue.get(timeout=max(step, 0.0))
            except queue.Empty:
                waited += step
                if timeout is not None and waited >= timeout:
                    return None
                continue
            if type(message) is list:
                self.depth -= len(message)
            return message

    def abandon(self) -> None:
        """Stop consuming: wake blocked producers and make their next ``put`` raise Abandoned."""
        self.abandoned = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


def _entry(raw: bytes) -> tuple[Any, Any, Any, Any]:
    entry = pickle.loads(raw)
    if not (isinstance(entry, tuple) and len(entry) == 4):
        raise PipelineError(
            "the pipeline journal was written by an older minipool (entries without a source "
            "position); finish that run with it, or start this one with a fresh journal directory"
        )
    return entry


class DurableChannel:
    """The journaled channel in front of a terminal stage.

    Args:
        directory: the journal directory (created if missing).
        fsync: the journal's durability policy (``"always"``, ``"everysec"``, ``"no"``).
        snapshot_every: markers between snapshots of the terminal's state.

    Journal records are pickles of ``(seq, position, states, records)``; snapshots of
    ``(seq, position, states, state)``, ``states`` being the stages' pickled states at that
    marker: the source position travels in the same atomic append as the records it completes,
    which is what lets a topic's consumer-group position and the pipeline's state move together.
    """

    def __init__(self, directory: str, *, fsync: str = "everysec", snapshot_every: int = 200) -> None:
        self._journal = Journal(directory, fsync=fsync, name="pipeline")
        self._snapshot_every = snapshot_every
        self._since_snapshot = 0
        self.damage: str | None = None
        self.fresh = True  # nothing was journaled before this run

    def restore(self, replay: Any) -> tuple[int, Any, Any, Any]:
        """Replay the journal: ``(seq, position, states, state)`` from the newest snapshot, then
        ``state = replay(state, records)`` for every record logged after it.

        Returns ``(0, None, (), None)`` for an empty journal. Damage is logged and kept in ``self.damage``.
        """
        journal = self._journal.replay()
        self.damage = journal.damage
        if journal.damage:
            log.warning("pipeline journal damaged, replaying the valid prefix: %s", journal.damage)
        self.fresh = journal.snapshot is None and not journal.records
        empty: tuple[int, Any, Any, Any] = (0, None, (), None)
        seq, position, states, state = empty if journal.snapshot is None else _entry(journal.snapshot)
        for raw in journal.records:
            seq, position, states, records = _entry(raw)
            state = replay(state, records)
        return seq, position, states, state

    def commit(self, marker: Marker, records: list[Any]) -> None:
        """Write ``records`` (completing source positions before ``marker.seq``), the source's
        position and the stages' states ahead of applying them: one atomic journal append."""
        entry = (marker.seq, marker.position, marker.states, records)
        self._journal.append(pickle.dumps(entry, pickle.HIGHEST_PROTOCOL))
        self._since_snapshot += 1

    def maybe_snapshot(self, marker: Marker, state: Any, *, force: bool = False) -> None:
        """Snapshot the (already applied) state if enough markers passed since the last one
        (or ``force``). The snapshot starts a fresh log, so the journal stays as long as one
        snapshot interval.
        """
        if force or self._since_snapshot >= self._snapshot_every:
            entry = (marker.seq, marker.position, marker.states, state)
            self._journal.snapshot(pickle.dumps(entry, pickle.HIGHEST_PROTOCOL))
            self._since_snapshot = 0

    def close(self) -> None:
        self._journal.close()
