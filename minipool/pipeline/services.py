"""Named services: a stage whose instances share the load, weighted towards the fastest.

Technique: seed 001's service IDs and dynamic load balancing. A record is not sent to "pipe #3"
but to the *service* ``"classify"``; the exchange layer picks one of the service's instances.
Seed 001 tracks how long each instance takes and gives slow ones smaller weights. Here each
instance keeps an exponentially weighted moving average (EWMA) of its seconds per record, its
weight is the inverse (records per second), and the dispatcher picks instances by *smooth
weighted round-robin* (nginx's algorithm: deterministic, and it interleaves rather than sending
bursts). With ``balance="round_robin"`` every weight stays 1, which is the baseline the
benchmark compares against. Each instance has a small bounded inbox, so a stalled instance
blocks the dispatcher only after its inbox fills: the weights do the steering, the bound keeps
memory flat. Outputs leave in completion order (a service does not preserve input order).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .channels import END, Abandoned, Cancelled, Channel
from .core import Stage
from .errors import PipelineError, StageFailed
from .runners import ErrorPolicy, Mode, StageKind, apply_chunk, check_function
from .runtime import Runtime

__all__ = ["service", "Service", "InstanceStats"]

_ALPHA = 0.3  # EWMA smoothing: recent pieces count most, one outlier does not flip the weights


@dataclass
class InstanceStats:
    """One instance of a service: what it did and the weight the balancer gives it now."""

    name: str
    records: int = 0
    seconds_per_record: float | None = None  # EWMA; None until its first piece finishes
    weight: float = 1.0


class Service(Stage):
    """Declared by :func:`service`."""

    stateful = False
    reorders = True  # outputs leave in completion order

    def __init__(
        self,
        service_name: str,
        fns: list[Callable[[Any], Any]],
        balance: str,
        chunksize: int,
        retries: int,
        errors: str,
    ) -> None:
        if balance not in ("dynamic", "round_robin"):
            raise PipelineError(f"balance must be 'dynamic' or 'round_robin', got {balance!r}")
        self.name, self.fns, self.balance = service_name, fns, balance
        self.chunksize, self.retries = chunksize, retries
        self.errors = ErrorPolicy(errors)
        self.label = f"service({service_name})"

    def open(self, name: str, run: Any, stats: Any) -> Runtime:
        for i, fn in enumerate(self.fns):
            check_function(f"{name}#{i}", fn, StageKind.THREAD)
        return _ServiceRuntime(self, name, run, stats)


class _ServiceRuntime(Runtime):
    self_timed = True

    def __init__(self, spec: Service, name: str, run: Any, stats: Any) -> None:
        self.spec, self.name, self.run, self.stats = spec, name, run, stats
        self.instances = [InstanceStats(f"{name}#{i}") for i in range(len(spec.fns))]
        run.services[name] = self.instances
        self._inboxes = [Channel(run.stop, 2) for _ in spec.fns]
        self._current = [0.0] * len(spec.fns)
        self._threads: list[threading.Thread] = []
        self._emit_lock = threading.Lock()

    def _start(self, emit: Callable[[Any], None]) -> None:
        def locked_emit(message: Any) -> None:
            with self._emit_lock:
                emit(message)

        for i, fn in enumerate(self.spec.fns):
            self._inboxes[i].add_producer()
            t = threading.Thread(
                target=self._serve,
                args=(i, fn, locked_emit),
                name=f"pl-{self.instances[i].name}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def _serve(self, i: int, fn: Callable[[Any], Any], emit: Callable[[Any], None]) -> None:
        me = self.instances[i]
        try:
            while True:
                piece = self._inboxes[i].get()
                if piece is END:
                    return
                out, failures, busy = apply_chunk(Mode.MAP, fn, piece, self.spec.retries)
                per_record = busy / len(piece)
                me.seconds_per_record = (
                    per_record
                    if me.seconds_per_record is None
                    else (_ALPHA * per_record + (1 - _ALPHA) * me.seconds_per_record)
                )
                me.records += len(piece)
                self.stats.busy_seconds += busy
                if failures:
                    self.run.handle_failures(me.name, self.spec.errors, failures, self.stats)
                if out:
                    emit(out)
        except (Abandoned, Cancelled):
            self._inboxes[i].abandon()
        except StageFailed as exc:
            self.run.fail(exc)
        except BaseException as exc:
            self.run.fail(StageFailed(me.name, exc))

    def _pick(self) -> int:
        """Smooth weighted round-robin over the instances' current weights."""
        if self.spec.balance == "dynamic":
            known = [s.seconds_per_record for s in self.instances if s.seconds_per_record]
            default = sum(known) / len(known) if known else 1.0
            for s in self.instances:
                s.weight = 1.0 / max(s.seconds_per_record or default, 1e-9)
        total = 0.0
        best = 0
        for i, s in enumerate(self.instances):
            self._current[i] += s.weight
            total += s.weight
            if self._current[i] > self._current[best]:
                best = i
        self._current[best] -= total
        return best

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        if not self._threads:
            self._start(emit)
        size = self.spec.chunksize
        for start in range(0, len(chunk), size):
            self._inboxes[self._pick()].put(chunk[start : start + size])

    def finish(self, emit: Callable[[Any], None]) -> None:
        if not self._threads:
            return
        for inbox in self._inboxes:
            inbox.close()
        for t in self._threads:
            while t.is_alive():
                t.join(0.05)
                if self.run.stop.is_set():
                    raise Cancelled

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.abandon()
        for t in self._threads:
            t.join()


def service(
    name: str,
    fn: Callable[[Any], Any] | None = None,
    *,
    instances: int | Sequence[Callable[[Any], Any]] = 2,
    balance: str = "dynamic",
    chunksize: int = 1,
    retries: int = 0,
    errors: str = "fail",
) -> Service:
    """A named service stage: ``instances`` copies of ``fn`` (or a list of instance functions).

    Args:
        name: the service's name (its statistics are in ``Execution.services[name]``).
        fn: the function every instance runs; omit it when ``instances`` is a list.
        instances: how many instances, or one function per instance.
        balance: ``"dynamic"`` (weights from measured speed) or ``"round_robin"``.
        chunksize: records per dispatch.
        retries / errors: as for :func:`~minipool.pipeline.map`.

    Raises:
        PipelineError: no function, or bad counts.
    """
    if isinstance(instances, int) and not isinstance(instances, bool):
        if fn is None or instances < 1:
            raise PipelineError("service() needs fn= and instances >= 1")
        fns = [fn] * instances
    elif isinstance(instances, bool):  # an int to isinstance(), but no count
        raise PipelineError(f"instances must be a count or a list of functions, got {instances!r}")
    else:
        fns = list(instances)
        if not fns:
            raise PipelineError("service() needs at least one instance")
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise PipelineError(f"chunksize must be a positive integer, got {chunksize!r}")
    return Service(name, fns, balance, chunksize, retries, errors)
