"""The pipeline DSL: ``pl.source(data) | pl.map(f, kind="process") | pl.reduce(add)``.

Technique: seed 000 §3.4-3.5 (sharding, merging, pipeline processing), seed 001 (process,
thread and coroutine pipes, named services with dynamic weights, exchange channels, recovery
logs) and seed 004 (windows, rolling aggregation, checkpoints, MapReduce), as one small API.
Read ``docs/pipeline.md`` for the tour; the modules, in reading order:

* :mod:`.core` -- Stage, Pipeline and ``|``: declarations, and the public way to write an
  operator (:func:`stage`, :class:`SimpleStage`, :class:`Terminal`, :class:`Fold`);
* :mod:`.runtime` -- the Runtime interface every running stage implements;
* :mod:`.execution` -- the Execution that runs one stage per thread;
* :mod:`.sources` -- the heads (source, merge), chunking records out of an iterable;
* :mod:`.channels` -- bounded fast channels (backpressure) and the durable, journaled channel;
* :mod:`.runners` -- the stage kinds: thread, process, async, any Executor;
* :mod:`.operators` -- map, filter, batch, reduce, ...;
* :mod:`.routing` -- merge (fan-in) and shard (split–process–combine);
* :mod:`.windows` -- tumbling/sliding windows by count or time, rolling aggregates;
* :mod:`.eventtime` -- time windows with a watermark, allowed lateness and a late side output;
* :mod:`.topics`, :mod:`.topicsink` -- a topic as a source and as a sink, exactly once with a journal;
* :mod:`.services` -- named services with weighted dynamic balancing;
* :mod:`.stats`, :mod:`.errors` -- observability and the failures a caller can act on.

The modules form layers, each importing only the ones before it: errors, stats; channels
(over :mod:`minipool.journal`); runtime; runners; sources; execution; core; operators,
windows, topics, topicsink, services; routing. ``tests/test_layers.py`` keeps it so.
"""

from .core import Fold, Pipeline, SimpleStage, Stage, Terminal, stage
from .errors import PipelineError, StageDefinitionError, StageFailed
from .eventtime import EventTimeWindows
from .execution import Execution
from .operators import (
    batch,
    collect,
    count,
    count_by,
    distinct,
    executor_parallelism,
    filter,
    flat_map,
    key_by,
    map,
    micro_batch,
    reduce,
    reduce_by_key,
    sink,
    source,
    take,
    tap,
    to_dict,
    top,
)
from .routing import merge, shard
from .runners import DeadLetter, ErrorPolicy, StageKind
from .runtime import Runtime, StageDone
from .services import InstanceStats, service
from .stats import StageStats
from .topics import from_topic
from .topicsink import to_topic
from .windows import Window, rolling, window

__all__ = [
    "Pipeline",
    "Stage",
    "SimpleStage",
    "stage",
    "Terminal",
    "Fold",
    "Runtime",
    "StageDone",
    "Execution",
    "PipelineError",
    "StageDefinitionError",
    "StageFailed",
    "source",
    "from_topic",
    "to_topic",
    "merge",
    "map",
    "executor_parallelism",
    "filter",
    "flat_map",
    "key_by",
    "tap",
    "batch",
    "micro_batch",
    "take",
    "distinct",
    "reduce_by_key",
    "count_by",
    "top",
    "collect",
    "reduce",
    "sink",
    "count",
    "to_dict",
    "shard",
    "service",
    "window",
    "rolling",
    "Window",
    "EventTimeWindows",
    "DeadLetter",
    "ErrorPolicy",
    "StageKind",
    "InstanceStats",
    "StageStats",
]
