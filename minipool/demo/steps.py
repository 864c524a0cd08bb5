"""The tour's steps, in the order they run: the one list a new step is added to.

A step is a function ``run(context) -> Outcome`` in a module of this package, named here with
the words ``python -m minipool.demo --only NAME`` takes and the one sentence it teaches.
"""

from __future__ import annotations

from . import cluster, compute, dataflow, exchange, faults, messaging, recursion, wire
from .step import Step

__all__ = ["STEPS", "by_name"]

STEPS: list[Step] = [
    Step(
        "dispatch",
        "pool management and dispatch: minipool.Pool vs ProcessPoolExecutor vs multiprocessing.Pool",
        "A task's round trip (queue, worker, result) is the price of every technique after this one.",
        compute.dispatch,
    ),
    Step(
        "pi",
        "SCOOP's Monte Carlo pi, and map_as_completed",
        "Independent batches big enough to hide a round trip scale with the idle cores; results "
        "in completion order arrive as soon as any batch ends.",
        compute.pi,
    ),
    Step(
        "mapreduce",
        "SCOOP's mapReduce",
        "Workers fold their own chunks and the caller folds the partials: an associative reduce "
        "travels to the data.",
        compute.mapreduce,
    ),
    Step(
        "sum",
        "the distributed sum (seed 003)",
        "Shipping data can cost more than computing on it: send the work where the data is, or "
        "make the data where the work is.",
        compute.distributed_sum,
    ),
    Step(
        "tasks",
        "Celery-style tasks: delay, retries, beat schedules, priorities",
        "A task queue decouples asking from doing: the caller gets an id at once, the broker "
        "retries, repeats and orders the work.",
        compute.tasks,
    ),
    Step(
        "nested",
        "tasks that submit tasks: SCOOP's futures created on the workers, recursion without deadlock",
        "A task may submit tasks and wait for them: its children stay in its worker and run as "
        "calls unless an idle worker steals them, and while it waits on a stolen one it gives its "
        "slot back, so a recursion deeper than the pool has slots still completes.",
        recursion.nested,
    ),
    Step(
        "chunking",
        "chunking and concurrency: map with chunksize 1, auto and large",
        "Batching items into chunks divides the per-task cost; too few chunks starve the workers.",
        compute.chunking,
    ),
    Step(
        "rpc",
        "message passing vs RPC: the pool and minipool.rpc, Pyro4's greeting and chained objects",
        "Message passing sends stateless work to any worker; RPC calls one particular object, "
        "which keeps its state between calls.",
        wire.rpc,
    ),
    Step(
        "transports",
        "choosing the transport: tcp, http, ws, zmq+tcp and TLS side by side",
        "The transport is a swappable layer: the same workload runs over each, and the framing "
        "each adds is what sets them apart.",
        wire.transports,
    ),
    Step(
        "compression",
        "compression: every codec's ratio and speed, gzip levels 1-9, and when it pays",
        "Compressing pays only on links slower than the codec: measure the ratio and the speed, "
        "then compare with the link.",
        wire.compression,
    ),
    Step(
        "shard",
        "shard and merge: split by key, process apart, combine",
        "Routing each key to one shard lets shards keep their own state and merge without clashes.",
        dataflow.shard,
    ),
    Step(
        "pipeline",
        "the pipeline: process, thread and coroutine stages",
        "CPU-bound stages need processes, waiting stages need only threads or coroutines.",
        dataflow.pipeline,
    ),
    Step(
        "streaming",
        "streaming: event-time windows and rolling aggregation",
        "Windows turn an endless stream into finite groups; rolling aggregates alert as records arrive.",
        dataflow.streaming,
    ),
    Step(
        "topics",
        "a message log: topics, a consumer group, a member SIGKILLed (seed 004)",
        "A log keeps every record until it is acknowledged: a crashed consumer's records are "
        "redelivered to the rest of its group, at least once, never lost.",
        messaging.topics,
    ),
    Step(
        "pipesets",
        "seed 001's pipe sets: a fragment served by processes, exchange channels, one SIGKILLed",
        "A pipe set's instances share an exchange channel in the centre and hand it each batch's "
        "outputs and acknowledgements as one step: a killed instance loses nothing, doubles nothing.",
        exchange.pipesets,
    ),
    Step(
        "balancing",
        "service discovery and balancing: a slowed worker and what each policy does",
        "A balancer that watches load or measured speed routes work around a slow worker; a blind "
        "one waits for it.",
        cluster.balancing,
    ),
    Step(
        "autoscaling",
        "autoscaling: a burst of work, the pool growing and shrinking",
        "An elastic pool adds workers while tasks wait and retires them when idle.",
        cluster.autoscaling,
    ),
    Step(
        "recovery",
        "fault recovery: workers SIGKILLed and SIGSTOPped, the coordinator restarted from its journal",
        "Stateless workers can die freely, their tasks run again; the stateful coordinator survives "
        "by journaling its state before it acts.",
        faults.recovery,
    ),
    Step(
        "chaos",
        "a network that misbehaves: the chaos proxy cutting and delaying",
        "At-least-once execution with results delivered once per task id survives a network that "
        "drops connections.",
        faults.chaos,
    ),
]


def by_name(names: list[str]) -> list[Step]:
    """The steps called ``names``, in tour order.

    Raises:
        ValueError: a name that is no step (the message lists the steps).
    """
    known = {step.name: step for step in STEPS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"no step {', '.join(map(repr, unknown))}; the steps are: {', '.join(known)}")
    return [step for step in STEPS if step.name in names]
