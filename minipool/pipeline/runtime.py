"""What a running stage is: the :class:`Runtime` interface, and the runtime of a terminal stage.

Technique: declarations apart from runtimes. A declared stage (:mod:`.core`) is immutable and
says what to do; when a pipeline starts, each stage *opens* a runtime, which holds that run's
state and workers. The execution's stage loop speaks to every runtime through the six methods
below and nothing else, which is what lets one declared fragment run as several shard copies,
or twice in a row, and what a new operator implements (docs/pipeline.md, "Adding an operator").

This module sits below both the execution and the declarations: the execution drives runtimes,
the declarations make them, and neither needs the other's module to do it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, Protocol

from .channels import DurableChannel, Marker

__all__ = ["Runtime", "StageDone", "TerminalRuntime", "Fold"]


class StageDone(Exception):
    """Raised by a runtime that needs no more input (``take``): its upstream is abandoned."""


class Runtime:
    """One stage of one run. The stage loop calls, in its stage's thread:

    * ``feed(chunk, emit)`` for every list of records (``emit(list)`` sends records on; raise
      :class:`StageDone` when no more input is needed);
    * ``mark(marker, emit)`` for a durable run's progress marker (the default passes it on);
    * ``holding()``: does the runtime keep records across chunks right now? A stateful stage's
      marker waits while it does, so a replay never loses held records;
    * ``wait_hint()`` and ``poll(emit)``: seconds to wait for input before ``poll`` is called
      (``None``: wait as long as it takes), for runtimes that act on time (time windows);
    * ``finish(emit)`` once the input ended; ``close()`` always, last, even after a failure.

    ``self_timed`` runtimes add their own busy time to the stage's statistics. A stateful
    runtime that names its state's attributes in ``state_fields`` can be checkpointed while it
    holds records: a durable run's barrier carries :meth:`snapshot` on, and a rerun hands it back
    to :meth:`restore` before any record.
    """

    self_timed = False
    state_fields: tuple[str, ...] = ()

    def snapshot(self) -> bytes:
        """The ``state_fields``, pickled now (the stage goes on changing them afterwards)."""
        return pickle.dumps({f: getattr(self, f) for f in self.state_fields}, pickle.HIGHEST_PROTOCOL)

    def restore(self, snapshot: bytes) -> None:
        for f, value in pickle.loads(snapshot).items():
            setattr(self, f, value)

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        raise NotImplementedError

    def mark(self, marker: Marker, emit: Callable[[Any], None]) -> None:
        emit(marker)

    def holding(self) -> bool:
        return False

    def wait_hint(self) -> float | None:
        return None

    def poll(self, emit: Callable[[Any], None]) -> None:
        pass

    def finish(self, emit: Callable[[Any], None]) -> None:
        pass

    def close(self) -> None:
        pass


class Fold(Protocol):
    """What a terminal stage folds the stream with (:class:`~.core.Terminal` has these).

    ``replay`` rebuilds the state from journaled records on a durable rerun (a fold that has
    side effects, such as writing to a topic, does not repeat them there); ``resume`` runs once
    the state is restored, before any record (a fresh run's state included), and returns a new
    object when it changed it (a fresh durable run then snapshots it at once); ``close`` last.
    """

    def initial(self) -> Any: ...

    def apply(self, state: Any, records: list[Any]) -> Any: ...

    def result(self, state: Any) -> Any: ...

    def replay(self, state: Any, records: list[Any]) -> Any: ...

    def resume(self, state: Any) -> Any: ...

    def close(self) -> None: ...


class TerminalRuntime(Runtime):
    """The running fold of a terminal stage; in a durable run, journaled before it applies.

    The execution gives it a :class:`~.channels.DurableChannel` (``durable``) and the position
    the journal restored (``last``); records then wait for the marker that
    completes them, are journaled with it, and only then applied. After each marker (journaled
    or not) ``checkpoint(position)`` tells the source that every effect before it is applied:
    a topic source then commits its consumer group's position.
    """

    def __init__(self, spec: Fold) -> None:
        self.spec = spec
        self.state = spec.initial()
        self.durable: DurableChannel | None = None
        self.last = Marker(0)  # the marker of the last commit: where a rerun starts
        self.checkpoint: Callable[[Any], None] | None = None
        self._pending: list[Any] = []

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        if self.durable is None:
            self.state = self.spec.apply(self.state, chunk)
        else:  # held until the marker that completes them, then journaled before applying
            self._pending.extend(chunk)

    def mark(self, marker: Marker, emit: Callable[[Any], None]) -> None:
        if self.durable is not None:
            self._commit(marker)
        if self.checkpoint is not None:
            self.checkpoint(marker.position)

    def _commit(self, marker: Marker) -> None:
        assert self.durable is not None
        self.durable.commit(marker, self._pending)
        self.state = self.spec.apply(self.state, self._pending)
        self._pending, self.last = [], marker
        self.durable.maybe_snapshot(marker, self.state)

    def finish(self, emit: Callable[[Any], None]) -> None:
        if self.durable is not None and self._pending:
            self._commit(self.last)
        emit([self.spec.result(self.state)])

    def close(self) -> None:
        try:
            self.spec.close()
        finally:
            if self.durable is not None:
                self.durable.close()
