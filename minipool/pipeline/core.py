"""Stages, pipelines and the running execution: the Unix pipe, in threads.

Technique: seed 000 §3.5 and seed 001's distributed pipeline pattern. A :class:`Stage` is an
immutable *declaration* (what to do); ``a | b`` builds a :class:`Pipeline`, a source followed
by a chain of stages; nothing runs until ``run()``, ``stream()`` or ``start()``, which hand the
declarations to :class:`~.execution.Execution`. There each stage gets its own *runtime* (its
state, its workers). Keeping declarations apart from runtimes is what lets one declared
fragment run as several shard copies, or twice in a row, without shared state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .channels import DurableLog, Marker
from .errors import PipelineError
from .stats import StageStats

if TYPE_CHECKING:
    from .execution import Execution

__all__ = ["Stage", "Runtime", "Terminal", "StageDone", "Pipeline", "Source", "Merge"]


class StageDone(Exception):
    """Raised by a runtime that needs no more input (``take``): its upstream is abandoned."""


class Stage:
    """Base of every declared stage. Subclasses define ``label`` and ``open``.

    ``stateful`` stages hold records across chunks (batch, windows): a durable run lets a
    progress marker pass them only while they hold nothing, so a replay never loses held records.
    """

    label = "stage"
    kind_name = "thread"
    stateful = False
    name: str | None = None

    def open(self, name: str, run: Execution, stats: StageStats) -> Any:
        raise NotImplementedError

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        return Pipeline(None, [self]) | other

    def display(self, index: int) -> str:
        return self.name or f"{index}.{self.label}"


class Runtime:
    """Default runtime behaviour: forward markers, nothing pending, nothing to close."""

    self_timed = False

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


class Terminal(Stage):
    """A stage that folds the stream into one value: ``initial``, ``apply``, ``result``.

    At the end of a pipeline its value is what ``run()`` returns; anywhere else (a shard, a
    merged branch) it emits that value as a single record when its input ends: a combine stage.
    """

    def initial(self) -> Any:
        raise NotImplementedError

    def apply(self, state: Any, records: list[Any]) -> Any:
        raise NotImplementedError

    def result(self, state: Any) -> Any:
        return state

    def open(self, name: str, run: Execution, stats: StageStats) -> Any:
        return _TerminalRuntime(self, run)


class _TerminalRuntime(Runtime):
    def __init__(self, spec: Terminal, run: Execution) -> None:
        self.spec = spec
        self.state = spec.initial()
        self.durable: DurableLog | None = None
        self.seq = 0
        self._pending: list[Any] = []

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        if self.durable is None:
            self.state = self.spec.apply(self.state, chunk)
        else:  # held until the marker that completes them, then journaled before applying
            self._pending.extend(chunk)

    def mark(self, marker: Marker, emit: Callable[[Any], None]) -> None:
        if self.durable is not None:
            self._commit(marker.seq)

    def _commit(self, seq: int) -> None:
        assert self.durable is not None
        self.durable.commit(seq, self._pending)
        self.state = self.spec.apply(self.state, self._pending)
        self._pending, self.seq = [], seq
        self.durable.maybe_snapshot(seq, self.state)

    def finish(self, emit: Callable[[Any], None]) -> None:
        if self.durable is not None and self._pending:
            self._commit(self.seq)
        emit([self.spec.result(self.state)])

    def close(self) -> None:
        if self.durable is not None:
            self.durable.close()


class Source:
    """The head of a pipeline: an iterable, or a zero-argument callable returning one.

    A callable is called afresh for every run, so a generator function makes a re-runnable source.
    """

    def __init__(self, iterable: Iterable[Any] | Callable[[], Iterable[Any]], name: str | None) -> None:
        self.iterable = iterable
        self.name = name or "source"


class Merge:
    """Fan-in head: the outputs of several pipelines, interleaved as they come."""

    def __init__(self, pipelines: tuple[Pipeline, ...]) -> None:
        for p in pipelines:
            if not isinstance(p, Pipeline) or p.head is None:
                raise PipelineError("merge() takes pipelines that each start with a source")
        if not pipelines:
            raise PipelineError("merge() needs at least one pipeline")
        self.pipelines = pipelines


class Pipeline:
    """A head (:class:`Source`, :class:`Merge`, or None for a reusable fragment) and stages."""

    def __init__(self, head: Source | Merge | None, stages: list[Stage]) -> None:
        self.head = head
        self.stages = stages

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        if isinstance(other, Stage):
            return Pipeline(self.head, [*self.stages, other])
        if isinstance(other, Pipeline):
            if other.head is not None:
                raise PipelineError("cannot pipe into a pipeline that has its own source; "
                                    "use pl.merge(p1, p2) to join pipelines")
            return Pipeline(self.head, [*self.stages, *other.stages])
        raise PipelineError(f"cannot pipe into {type(other).__name__}: expected a stage")

    def start(self, *, journal: str | None = None, fsync: str = "everysec",
              snapshot_every: int = 200, buffer: int = 8, collect: bool = True) -> Execution:
        """Start every stage and return the running :class:`Execution`.

        Args:
            journal: a directory for the durable channel; ``None`` for fast channels only.
            fsync: the journal's policy: ``"always"``, ``"everysec"`` or ``"no"``.
            snapshot_every: commits between snapshots of the terminal state.
            buffer: chunks each channel holds before its producer blocks (backpressure).
            collect: add ``collect()`` when the pipeline does not end in a terminal stage.

        Raises:
            PipelineError: no source, or ``journal=`` on a pipeline it cannot make durable.
            StageDefinitionError: a stage cannot run as declared (nothing is left running).
        """
        stages = self.stages
        if collect and not (stages and isinstance(stages[-1], Terminal)):
            from .operators import collect as _collect
            stages = [*stages, _collect()]
        from .execution import Execution  # the running side imports this module, not vice versa
        return Execution(Pipeline(self.head, stages), journal=journal, fsync=fsync,
                         snapshot_every=snapshot_every, buffer=buffer)

    def run(self, **options: Any) -> Any:
        """Run to the end; return the terminal stage's value (a list if there is none).

        Takes the options of :meth:`start`. Raises :class:`StageFailed` naming the failing stage.
        """
        with self.start(**options) as execution:
            return execution.result()

    def stream(self, **options: Any) -> Iterator[Any]:
        """Yield the pipeline's output records lazily; closing the generator stops the run."""
        with self.start(collect=False, **options) as execution:
            yield from execution
