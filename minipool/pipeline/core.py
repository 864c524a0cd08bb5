"""Stages and pipelines: the declarations, ``|``, and starting a run.

Technique: seed 000 §3.5 and seed 001's distributed pipeline pattern. A :class:`Stage` is an
immutable *declaration* (what to do); ``a | b`` builds a :class:`Pipeline`, a head followed by
a chain of stages; nothing runs until ``run()``, ``stream()`` or ``start()``, which hand the
declarations to :class:`~.execution.Execution`. There each stage *opens* its own
:class:`~.runtime.Runtime` (its state, its workers). Keeping declarations apart from runtimes
is what lets one declared fragment run as several shard copies, or twice in a row.

A new operator is a :class:`~.runtime.Runtime` plus a declaration: :func:`stage` builds one
from a function that makes the runtime (or subclass :class:`SimpleStage`), and a fold into one
value subclasses :class:`Terminal`. docs/pipeline.md, "Adding an operator", shows both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .errors import PipelineError
from .execution import Execution
from .runtime import Runtime, TerminalRuntime
from .sources import Merge, Source
from .stats import StageStats

__all__ = ["Stage", "SimpleStage", "stage", "Terminal", "Fold", "collect", "Pipeline", "positive_int"]


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive ``int`` (not a bool), else a PipelineError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineError(f"{name} must be a positive integer, got {value!r}")
    return value


class Stage:
    """Base of every declared stage. Subclasses define ``label`` and ``open``.

    ``stateful`` stages hold records across chunks (batch, windows): a durable run lets a
    progress marker pass them only while they hold nothing, so a replay never loses held records.
    ``reorders`` stages (shard, service) emit records out of input order, so a durable run,
    whose markers count records in order, refuses them.
    """

    label = "stage"
    kind_name = "thread"
    stateful = False
    reorders = False
    name: str | None = None

    def open(self, name: str, run: Execution, stats: StageStats) -> Runtime:
        raise NotImplementedError

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        return Pipeline(None, [self]) | other

    def display(self, index: int) -> str:
        return self.name or f"{index}.{self.label}"


class SimpleStage(Stage):
    """A stage whose runtime needs nothing from the run: it is made by ``factory()``.

    The public base for simple operators. Either pass ``factory`` (what :func:`stage` does) or
    subclass and override :meth:`runtime`. Each run calls it afresh, so runs share no state.
    """

    def __init__(
        self,
        label: str,
        factory: Callable[[], Runtime] | None = None,
        *,
        stateful: bool = False,
        name: str | None = None,
    ) -> None:
        self.label, self._factory, self.stateful, self.name = label, factory, stateful, name

    def runtime(self) -> Runtime:
        """A fresh runtime for one run of this stage."""
        if self._factory is None:
            raise NotImplementedError(f"{type(self).__name__} needs a factory or a runtime() method")
        return self._factory()

    def open(self, name: str, run: Execution, stats: StageStats) -> Runtime:
        return self.runtime()


def stage(
    factory: Callable[[], Runtime], *, label: str, stateful: bool = False, name: str | None = None
) -> SimpleStage:
    """Declare a stage whose runtime ``factory()`` makes, once per run.

    Args:
        factory: makes a fresh :class:`~.runtime.Runtime` (a class, or a ``lambda``).
        label: the stage's kind in statistics and errors, e.g. ``"every(3)"``.
        stateful: the runtime holds records across chunks (see :class:`Stage`).
        name: the stage's name in errors and statistics.
    """
    return SimpleStage(label, factory, stateful=stateful, name=name)


class Terminal(Stage):
    """A stage that folds the stream into one value: ``initial``, ``apply``, ``result``.

    At the end of a pipeline its value is what ``run()`` returns; anywhere else (a shard, a
    merged branch) it emits that value as a single record when its input ends: a combine stage.
    In a durable run its input is journaled before ``apply`` sees it, and its state snapshotted.
    """

    def initial(self) -> Any:
        raise NotImplementedError

    def apply(self, state: Any, records: list[Any]) -> Any:
        raise NotImplementedError

    def result(self, state: Any) -> Any:
        return state

    def replay(self, state: Any, records: list[Any]) -> Any:
        """Rebuild the state from journaled records on a durable rerun (default: ``apply``)."""
        return self.apply(state, records)

    def resume(self, state: Any) -> Any:
        """Called once with the restored (or initial) state before any record; returns it."""
        return state

    def close(self) -> None:
        """Called last, even after a failure."""

    def open(self, name: str, run: Execution, stats: StageStats) -> Runtime:
        return TerminalRuntime(self)


class Fold(Terminal):
    """A terminal stage made of three functions: ``initial()``, ``apply(state, records)``,
    ``result(state)`` (default: the state itself)."""

    def __init__(
        self,
        label: str,
        initial: Callable[[], Any],
        apply: Callable[[Any, list[Any]], Any],
        result: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.label, self._initial, self._apply, self._result, self.name = (
            label,
            initial,
            apply,
            result,
            name,
        )

    def initial(self) -> Any:
        return self._initial()

    def apply(self, state: Any, records: list[Any]) -> Any:
        return self._apply(state, records)

    def result(self, state: Any) -> Any:
        return state if self._result is None else self._result(state)


def _extend(state: list[Any], records: list[Any]) -> list[Any]:
    state.extend(records)
    return state


def collect(*, name: str | None = None) -> Terminal:
    """Terminal: every record, in a list (what ``run()`` ends with when no terminal is given)."""
    return Fold("collect", list, _extend, name=name)


_collect = collect  # start()'s flag of the same name hides the function inside start()


class Pipeline:
    """A head (:class:`~.sources.Source`, :class:`~.sources.Merge`, or None for a reusable
    fragment) and stages."""

    def __init__(self, head: Source | Merge | None, stages: list[Stage]) -> None:
        self.head = head
        self.stages = stages

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        if isinstance(other, Stage):
            return Pipeline(self.head, [*self.stages, other])
        if isinstance(other, Pipeline):
            if other.head is not None:
                raise PipelineError(
                    "cannot pipe into a pipeline that has its own source; "
                    "use pl.merge(p1, p2) to join pipelines"
                )
            return Pipeline(self.head, [*self.stages, *other.stages])
        raise PipelineError(f"cannot pipe into {type(other).__name__}: expected a stage")

    def start(
        self,
        *,
        journal: str | None = None,
        fsync: str = "everysec",
        snapshot_every: int = 200,
        buffer: int = 8,
        collect: bool = True,
    ) -> Execution:
        """Start every stage and return the running :class:`~.execution.Execution`.

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
            stages = [*stages, _collect()]
        return Execution(
            Pipeline(self.head, stages),
            journal=journal,
            fsync=fsync,
            snapshot_every=snapshot_every,
            buffer=buffer,
        )

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
