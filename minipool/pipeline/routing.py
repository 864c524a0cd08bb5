"""Routing: fan-in of several pipelines, and split–process–combine by key.

Technique: seed 000 §3.4 (sharding a data set and merging the partial results) and seed 001's
merge condition (several factorial pipes feeding one combining pipe). :func:`merge` is the
fan-in: one channel with several producers, closed when the last one closes. :func:`shard`
routes each record by ``hash(key) % n`` to one of ``n`` copies of a fragment -- each with its own
state and threads, like the reducers of a MapReduce -- whose outputs meet again in one channel.
A terminal stage inside a shard emits its partial result, and a ``reduce`` after the shard is the
combine step. Keys hash with Python's ``hash``, which is stable within one run (what routing
needs) but salted between runs for strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .channels import Channel
from .core import Pipeline, Stage, positive_int, stage
from .errors import PipelineError
from .execution import Execution
from .runtime import Runtime
from .sources import Merge

__all__ = ["merge", "shard", "Shard"]


def merge(*pipelines: Pipeline) -> Pipeline:
    """Fan-in: one stream of every record of every pipeline, interleaved as they arrive.

    Raises:
        PipelineError: no pipelines, or one that does not start with a source.
    """
    for p in pipelines:
        if not isinstance(p, Pipeline) or p.head is None:
            raise PipelineError("merge() takes pipelines that each start with a source")
    if not pipelines:
        raise PipelineError("merge() needs at least one pipeline")
    return Pipeline(Merge(pipelines), [])


class _Router(Runtime):
    def __init__(self, key: Callable[[Any], Any], shards: list[Channel]) -> None:
        self.key, self.shards = key, shards

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        n = len(self.shards)
        buckets: list[list[Any]] = [[] for _ in range(n)]
        key = self.key
        for record in chunk:
            buckets[hash(key(record)) % n].append(record)
        for shard, bucket in zip(self.shards, buckets, strict=True):
            if bucket:
                shard.put(bucket)

    def finish(self, emit: Callable[[Any], None]) -> None:
        for shard in self.shards:
            shard.close()


class Shard(Stage):
    """Split by key into ``n`` copies of a fragment, then merge their outputs (see :func:`shard`)."""

    reorders = True  # the shards' outputs interleave as they finish

    def __init__(self, n: int, key: Callable[[Any], Any], then: Pipeline | Stage, name: str | None) -> None:
        self.n = positive_int("shard count", n)
        if isinstance(then, Stage):
            then = Pipeline(None, [then])
        if not isinstance(then, Pipeline) or then.head is not None or not then.stages:
            raise PipelineError(
                "shard(then=...) needs stages without a source, e.g. pl.map(f) | pl.reduce(add)"
            )
        self.key, self.then, self.name = key, then, name
        self.label = f"shard({n})"

    def wire(self, name: str, run: Execution, inbound: Channel, outbound: Channel) -> None:
        shards = [Channel(run.stop, run.buffer) for _ in range(self.n)]
        for i, channel in enumerate(shards):
            channel.add_producer()
            run.build_stages(self.then.stages, channel, outbound, f"{name}[{i}].")
        router = stage(lambda: _Router(self.key, shards), label=self.label)
        run.add_stage(router, name, inbound, Channel(run.stop, 1))  # the router emits to shards only


def shard(n: int, *, key: Callable[[Any], Any], then: Pipeline | Stage, name: str | None = None) -> Shard:
    """Split–process–combine: route each record to shard ``hash(key(record)) % n``.

    Each shard runs its own copy of ``then`` (its own state, its own thread(s)); a terminal
    stage in ``then`` emits each shard's partial result, and the outputs of every shard merge
    into one stream for the next stage, e.g. a final ``reduce`` that combines the partials.
    """
    return Shard(n, key, then, name)
