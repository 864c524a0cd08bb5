"""One run of a pipeline: a thread per stage, bounded channels between them, one stop event.

Technique: the Unix pipe, in threads. Starting a :class:`~.core.Pipeline` makes an
:class:`Execution`: every stage's runtime gets its own thread, joined to its neighbours by
bounded :class:`~.channels.Channel` s, exactly like the processes of ``cat log | grep x | sort``.
A source thread runs :func:`~.sources.run_source`; every stage thread runs the one small stage
loop below, so the behaviour of a running stage -- markers, early stop, failure -- is in one place.

The first failure anywhere is recorded, the stop event is set, every thread notices within
50 ms, every stage closes its workers, and ``result()`` re-raises the failure naming its stage.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..journal import FSYNC_POLICIES
from .channels import END, Abandoned, Cancelled, Channel, DurableChannel, Marker
from .errors import PipelineError, StageFailed
from .runners import DeadLetter, ErrorPolicy
from .runtime import StageDone, TerminalRuntime
from .sources import Merge, Reader, Source, run_source
from .stats import StageStats, format_summary

__all__ = ["Execution", "Plan"]

log = logging.getLogger("minipool.pipeline")

SOURCE_GRACE = 1.0  # seconds close() waits for a source stuck in its iterator
CHECKPOINT_INTERVAL = 0.2  # seconds between barriers in a durable run (Flink's checkpoint interval)


class Plan(Protocol):
    """What an execution runs: a head and declared stages (a :class:`~.core.Pipeline` is one).

    Each stage has ``open(name, run, stats)`` returning its :class:`~.runtime.Runtime`,
    ``display(index)``, ``kind_name``, ``stateful`` and ``reorders``; a stage with its own
    topology (``shard``) has ``wire(name, run, inbound, outbound)`` instead of being opened here.
    """

    head: Source | Merge | None
    stages: list[Any]


class Execution:
    """One run of a pipeline: its threads, channels, stats, dead letters and outcome."""

    def __init__(
        self, pipeline: Plan, *, journal: str | None, fsync: str, snapshot_every: int, buffer: int
    ) -> None:
        if pipeline.head is None:
            raise PipelineError("the pipeline has no source: start it with pl.source(...) | ...")
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.dead_letters: list[DeadLetter] = []
        self.side_outputs: dict[str, list[Any]] = {}  # name -> records a stage set aside
        self.services: dict[str, list[Any]] = {}  # service name -> its InstanceStats
        self.journal_damage: str | None = None
        self._lock = threading.Lock()
        self.buffer = buffer  # chunks per channel: the backpressure bound
        self._threads: list[threading.Thread] = []
        self._source_threads: set[threading.Thread] = set()
        self._closed = False
        self._runtimes: list[Any] = []
        self._runtime_named: dict[str, Any] = {}
        self._last_barrier = time.monotonic()
        self._stats: list[StageStats] = []
        self.resume_from = 0  # source records already done (a durable rerun skips them)
        self.resume_position: Any = None  # where a positioned source restarts (a durable rerun)
        self.position: Any = None  # the positioned source's place after the last chunk sent
        self.reader: Reader | None = None  # the head's positioned reader (a topic), opened per run
        self.durable = journal is not None
        self._terminal: TerminalRuntime | None = None
        self.output = Channel(self.stop, buffer)
        try:
            self._build(pipeline, self.output, "")
            self._tracked = not any(s.reorders for s in pipeline.stages)  # markers keep order
            if self.reader is not None and not self._tracked:
                self.reader.commit_as_read()
            last = self._runtimes[-1] if pipeline.stages else None
            if isinstance(last, TerminalRuntime):
                self._terminal = last
                durable = None
                if journal is not None:
                    durable = self._open_journal(pipeline, last, journal, fsync, snapshot_every)
                restored, last.state = last.state, last.spec.resume(last.state)
                if durable is not None and durable.fresh and last.state is not restored:
                    # what resume() found (a sink's starting point) is on disk before any record
                    durable.maybe_snapshot(Marker(0), last.state, force=True)
                if self.reader is not None:
                    last.checkpoint = self.checkpoint
            elif journal is not None:
                raise PipelineError(
                    "journal= needs a terminal stage to make durable (collect, "
                    "reduce, count, ...): use run(), not stream()"
                )
        except BaseException:
            self.stop.set()
            for rt in self._runtimes:
                rt.close()
            raise
        for thread in self._threads:
            thread.start()

    def _open_journal(
        self, pipeline: Plan, terminal: TerminalRuntime, directory: str, fsync: str, snapshot_every: int
    ) -> DurableChannel:
        if fsync not in FSYNC_POLICIES:
            raise PipelineError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        if not isinstance(pipeline.head, Source) or any(s.reorders for s in pipeline.stages):
            raise PipelineError(
                "journal= needs a linear pipeline (one source, no merge, shard or "
                "service): those reorder records, so a marker could not say "
                "which ones are done"
            )
        durable = DurableChannel(directory, fsync=fsync, snapshot_every=snapshot_every)
        spec = terminal.spec

        def replay(state: Any, records: list[Any]) -> Any:
            return spec.replay(spec.initial() if state is None else state, records)

        seq, position, states, state = durable.restore(replay)
        self.journal_damage = durable.damage
        terminal.durable, terminal.last = durable, Marker(seq, position, states=states)
        self.resume_from, self.resume_position = seq, position
        self.position = position
        if state is not None:
            terminal.state = state
        for name, snapshot in states:  # the stages that held records at the last barrier
            if name not in self._runtime_named:
                raise PipelineError(
                    f"the journal holds the state of stage {name!r}, which this pipeline lacks"
                )
            self._runtime_named[name].restore(snapshot)
        if not durable.fresh:
            log.info(
                "resuming from the journal: %d source records done%s; restored the state of %s",
                seq,
                "" if position is None else f", at position {position}",
                ", ".join(name for name, _ in states) or "no stage holding records",
            )
        return durable

    # -- wiring --------------------------------------------------------------------------

    def _build(self, pipeline: Plan, out: Channel, prefix: str) -> None:
        """Wire ``pipeline`` so that its last stage (or its head) writes into ``out``."""
        stages = pipeline.stages
        first = out if not stages else Channel(self.stop, self.buffer)
        head = pipeline.head
        if isinstance(head, Source):
            if head.reader is not None:
                if prefix:
                    raise PipelineError(f"source {head.name!r} knows its position and cannot be merged")
                self.reader = head.reader()
            first.add_producer()
            stats = self._new_stats(prefix + head.name, "source")
            self._spawn(prefix + head.name, run_source, self, head, first, stats)
            self._source_threads.add(self._threads[-1])
        elif isinstance(head, Merge):
            for i, branch in enumerate(head.pipelines):
                self._build(branch, first, f"{prefix}merge[{i}].")
        self.build_stages(stages, first, out, prefix)

    def build_stages(self, stages: list[Any], inbound: Channel, out: Channel, prefix: str) -> None:
        """Wire declared ``stages`` in a row from ``inbound`` to ``out`` (a shard wires its copies so)."""
        for i, stage in enumerate(stages):
            outbound = out if i == len(stages) - 1 else Channel(self.stop, self.buffer)
            name = prefix + stage.display(i + 1)
            wire = getattr(stage, "wire", None)
            if wire is not None:  # stages with their own topology (shard)
                wire(name, self, inbound, outbound)
            else:
                self.add_stage(stage, name, inbound, outbound)
            inbound = outbound

    def add_stage(self, stage: Any, name: str, inbound: Channel, outbound: Channel) -> None:
        """Open ``stage``'s runtime and give it a thread reading ``inbound``, writing ``outbound``."""
        stats = self._new_stats(name, stage.kind_name)
        runtime = stage.open(name, self, stats)
        self._runtimes.append(runtime)
        self._runtime_named[name] = runtime
        outbound.add_producer()
        self._spawn(name, self._stage_loop, runtime, inbound, outbound, stats, stage.stateful)

    def _new_stats(self, name: str, kind: str) -> StageStats:
        stats = StageStats(name, kind)
        self._stats.append(stats)
        return stats

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        self._threads.append(threading.Thread(target=target, args=args, name=f"pl-{name}", daemon=True))

    # -- the two loops every thread runs -------------------------------------------------

    def send(
        self, out: Channel, chunk: list[Any], seq: int, stats: StageStats, *, barrier: bool = False
    ) -> int:
        """Send one source chunk (and, in a durable run or from a reader, the marker after it);
        the new position. ``barrier`` asks for a barrier now (a reader waiting for a checkpoint)."""
        if chunk:
            stats.records_out += len(chunk)
            out.put(chunk)
            seq += len(chunk)
        barrier = self.durable and (barrier or time.monotonic() - self._last_barrier >= CHECKPOINT_INTERVAL)
        if barrier:
            self._last_barrier = time.monotonic()
        if self.reader is not None and self._tracked:
            self.position = self.reader.advance(self.position, chunk)
            out.put(Marker(seq, self.position, barrier))
        elif self.durable:
            out.put(Marker(seq, None, barrier))
        return seq

    def checkpoint(self, position: Any) -> None:
        """Every record's effect up to the source's ``position`` is applied (and journaled)."""
        if self.reader is not None:
            self.reader.checkpoint(position)

    def _stage_loop(
        self, runtime: Any, inbound: Channel, outbound: Channel, stats: StageStats, stateful: bool
    ) -> None:
        checkpointable = bool(runtime.state_fields)

        def emit(message: Any) -> None:
            if type(message) is list:
                stats.records_out += len(message)
            outbound.put(message)

        held_marker: Marker | None = None
        clock = time.perf_counter
        try:
            try:
                while True:
                    message = inbound.get(runtime.wait_hint())
                    stats.queue_depth = inbound.depth
                    if message is None:
                        runtime.poll(emit)
                    elif message is END:
                        break
                    elif type(message) is list:
                        stats.records_in += len(message)
                        if runtime.self_timed:
                            runtime.feed(message, emit)
                        else:
                            start = clock()
                            runtime.feed(message, emit)
                            stats.busy_seconds += clock() - start
                    elif stateful and runtime.holding():
                        if message.barrier and checkpointable:  # passes with the state it covers
                            held_marker = None
                            state = (stats.name, runtime.snapshot())
                            runtime.mark(dataclasses.replace(message, states=(*message.states, state)), emit)
                        else:
                            held_marker = message  # passes once the state it covers is emitted
                    else:
                        held_marker = None
                        runtime.mark(message, emit)
            except StageDone:
                inbound.abandon()
            runtime.finish(emit)
            if held_marker is not None:
                emit(held_marker)
            outbound.close()
        except Abandoned:
            inbound.abandon()
        except Cancelled:
            pass
        except StageFailed as exc:
            self.fail(exc)
        except BaseException as exc:
            self.fail(StageFailed(stats.name, exc))
        finally:
            stats.finished = clock()
            try:
                runtime.close()
            except Exception:
                log.exception("closing stage %r", stats.name)

    # -- failures, results, shutdown -----------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """Record the first failure and stop every thread."""
        with self._lock:
            if self.error is None:
                if isinstance(exc, StageFailed) and exc.__cause__ is None:
                    exc.__cause__ = exc.cause
                self.error = exc
        self.stop.set()

    def handle_failures(
        self, stage: str, policy: ErrorPolicy, failures: list[Any], stats: StageStats
    ) -> None:
        """Apply a stage's error policy to the records its function failed on.

        Raises:
            StageFailed: under ``ErrorPolicy.FAIL``, for the first failed record.
        """
        stats.errors += len(failures)
        if policy is ErrorPolicy.FAIL:
            record, error = failures[0]
            raise StageFailed(stage, error, record) from error
        if policy is ErrorPolicy.SKIP:
            for _record, error in failures:
                log.warning("stage %r skipped a record: %s: %s", stage, type(error).__name__, error)
        else:
            with self._lock:
                self.dead_letters.extend(DeadLetter(stage, r, e) for r, e in failures)

    def side_output(self, name: str) -> list[Any]:
        """The records stages of this run sent to the side output ``name`` (e.g. a window's
        too-late records), in the order they were set aside; an empty list if none were."""
        with self._lock:
            return self.side_outputs.setdefault(name, [])

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                try:
                    message = self.output.get()
                except Cancelled:
                    break
                if message is END:
                    break
                if type(message) is list:
                    yield from message
                elif isinstance(message, Marker):  # the records before it were handed out
                    self.checkpoint(message.position)
        finally:
            self.close()
        if self.error is not None:
            raise self.error

    def result(self) -> Any:
        """Wait for the end; return the terminal value. Raises the run's first failure."""
        values = list(self)  # a terminal stage emits its value as the one output record
        if self._terminal is None:
            return values
        return values[-1]

    def close(self) -> None:
        """Stop (if still running) and join every thread; safe to call twice.

        A source thread blocked inside its iterator's ``next()`` (a socket read, a sleeping
        generator) cannot be interrupted by Python; it is given ``SOURCE_GRACE`` seconds and
        otherwise left behind as a daemon thread that exits as soon as ``next()`` returns, so
        closing never hangs on a silent source.
        """
        if self._closed:
            return
        self._closed = True
        if any(t.is_alive() for t in self._threads):
            self.output.abandon()
        for thread in self._threads:
            waited = 0.0
            while thread.is_alive():
                thread.join(0.05)
                waited += 0.05
                self.output.abandon()  # keep a blocked last stage from waiting on us
                if thread in self._source_threads and waited >= SOURCE_GRACE:
                    log.warning("source thread %s is still blocked in its iterator; not waiting", thread.name)
                    break
        if self.reader is not None:  # commits the last checkpoint, then disconnects
            self.reader.close()

    def cancel(self) -> None:
        self.stop.set()
        self.close()

    def __enter__(self) -> Execution:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            self.stop.set()
        self.close()

    def stats(self) -> list[StageStats]:
        """Live per-stage statistics (also valid after the end: the summary)."""
        return list(self._stats)

    def summary(self) -> str:
        return format_summary(self._stats)
