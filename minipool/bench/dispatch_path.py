"""The coordinator's process alone: CPU per task of the embedded pool's path, without sockets.

``Pool.submit`` on an embedded pool runs in one process -- the submitting thread, and the
readers of the worker connections -- and the GIL runs those threads one at a time, so the CPU
that process spends per task bounds the rate on a quiet machine. This measures it with the
sockets taken out, so that it does not move with the load of a shared machine the way a rate
does: the real :class:`~minipool.client.LocalClient`, :class:`~minipool.cluster.broker.Broker`
and scheduler, two workers whose connections are lists (their TASKs are answered here, outside
the measurement, with what a worker would send), and ``thread_time`` around each phase:

* ``submit``: ``pack_call`` and ``LocalClient.submit`` for every task (most of them queue);
* ``decode``: the RESULT envelopes decoded, as a worker connection's reader does;
* ``burst``: ``Broker.on_worker_burst`` -- complete, lease the next TASKs and encode them,
  settle the futures;
* ``result``: ``future.result()`` for every task.
"""

from __future__ import annotations

import time
from typing import Any

from .. import task as tasklib
from ..client import LocalClient
from ..cluster.broker import Broker
from ..cluster.outbox import Batch
from ..cluster.state import WorkerState
from ..transports.base import DEFAULT_MAX_MESSAGE
from ..wire import Format, Kind, decode, encode_parts

__all__ = ["PHASES", "measure"]

PHASES = ("submit", "decode", "burst", "result")


def noop(x: Any = None) -> Any:
    return x


class _Wire:
    """A worker's connection and outbox in one: what the broker sends it is kept in ``sent``."""

    failed = False
    closed = False
    peer = "bench"
    has_pending = False
    pending_bytes = 0

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.conn = self.outbox = self

    def put(self, data: bytes, *, flush: bool = True) -> None:
        self.sent.append(data)

    def put_many(self, items: list[bytes]) -> None:
        self.sent.extend(items)

    def flush(self) -> None:
        pass

    def try_put(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _Broker(Broker):
    max_message = DEFAULT_MAX_MESSAGE  # what a Coordinator announces; LocalClient reads it


def _answers(sent: list[bytes]) -> list[bytes]:
    """What a worker sends back for ``sent``: one RESULT per TASK (not measured)."""
    results = []
    for data in sent:
        number = decode(data).id
        _, body, codec = tasklib.pack_outcome(True, number)
        results.append(encode_parts(Kind.RESULT, number, body, Format.PICKLE, codec, None))
    return results


def _round(
    client: LocalClient, broker: Broker, wires: list[tuple[WorkerState, _Wire]], n: int
) -> dict[str, float]:
    clock = time.thread_time
    spent = dict.fromkeys(PHASES, 0.0)
    start = clock()
    futures = [client.submit(*tasklib.pack_call(noop, (i,), {})) for i in range(n)]
    spent["submit"] = clock() - start
    while any(wire.sent for _, wire in wires):
        for worker, wire in wires:
            sent, wire.sent = wire.sent, []
            results = _answers(sent)
            start = clock()
            burst = [decode(data) for data in results]
            decoded = clock()
            batch = Batch()
            broker.on_worker_burst(worker, burst, batch)
            batch.flush()
            spent["decode"] += decoded - start
            spent["burst"] += clock() - decoded
    start = clock()
    for future in futures:
        future.result()
    spent["result"] = clock() - start
    return spent


def measure(tasks: int, repeat: int) -> dict[str, float]:
    """Microseconds of CPU per task in each phase (from the round whose phases sum least),
    and ``total``."""
    broker = _Broker()
    wires = []
    for i in range(2):
        wire = _Wire()
        worker = WorkerState(wire, f"bench/{i}", 1, None, {})
        broker.attach(worker)
        wires.append((worker, wire))
    client = LocalClient(broker)  # type: ignore[arg-type]  # a Broker is all it calls
    try:
        _round(client, broker, wires, min(tasks, 1000))  # warm up: caches, the prefetch estimate
        best = min(
            (_round(client, broker, wires, tasks) for _ in range(repeat)), key=lambda s: sum(s.values())
        )
    finally:
        client.close()
    per_task = {phase: 1e6 * seconds / tasks for phase, seconds in best.items()}
    per_task["total"] = sum(per_task.values())
    return per_task
