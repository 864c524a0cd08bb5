"""A pipe set's definition: which exchange channel it reads, the pipeline fragment it runs on
each record, and where each output goes.

Technique: seed 001's *pipe set* and *tagged output*. A pipe set is a pipeline fragment with
no source of its own: its records arrive from an exchange channel (a topic on the
coordinator, the paper's global pipe centre), and each output names the channel it goes to,
as the paper's pipes push data "to a pipe service ID" rather than to a fixed pipe. The
definition is plain data (a name, channel names, a fragment, a codec), so the same object is
imported by every instance process, wherever it runs.

The fragment runs once per fetched batch, as ``(pl.source(batch) | fragment).run()``: the
outputs of a batch are then known exactly, which is what lets an instance hand the centre "these
outputs, for those inputs" as one step. So a fragment's state lasts one batch: use
record-at-a-time operators (map, filter, flat_map, ...) in a pipe set, and aggregate in a pipe
set of its own downstream.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import pipeline as pl
from ..topics.records import check_topic_name

__all__ = ["PipeSet", "Routed", "to_channel", "CODECS", "DEFAULT_PARTITIONS", "encode_json"]

#: Partitions of a channel a pipe set creates: the most instances that can share it at once,
#: and the grain of weighted balancing (a slow instance is given fewer partitions).
DEFAULT_PARTITIONS = 12


@dataclass(frozen=True)
class Routed:
    """An output record tagged with the exchange channel it goes to."""

    channel: str
    value: Any


def to_channel(channel: str | Callable[[Any], str]) -> pl.Stage:
    """A stage that tags each record with its exchange channel: a name, or a function of the
    record that returns one (``to_channel(lambda doc: "long" if len(doc) > 99 else "short")``).
    A record that reaches the end of a fragment untagged goes to the pipe set's ``output``."""
    if callable(channel):
        pick = channel
        return pl.map(lambda record: Routed(check_topic_name(pick(record)), record), name="to_channel")
    name = check_topic_name(channel)
    return pl.map(lambda record: Routed(name, record), name=f"to_channel({name})")


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _bytes_encode(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"the bytes codec sends bytes or str, not {type(value).__name__}")


#: How records travel in a channel: ``json`` (any JSON value) or ``bytes`` (bytes in, bytes or
#: str out: lines from ``minipool produce``). Never pickle: a channel's records come from
#: anyone who may produce to the coordinator.
CODECS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "json": (encode_json, json.loads),
    "bytes": (_bytes_encode, bytes),
}


@dataclass(frozen=True)
class PipeSet:
    """A pipeline fragment served by instances that share one exchange channel.

    Args:
        name: the pipe set's service ID: its consumer group, its registry service, the prefix
            of its instances' registry keys.
        source: the exchange channel it consumes.
        fragment: a pipeline fragment (``pl.map(f) | pl.filter(g)``) or a single stage.
        output: where untagged outputs go (``None``: a fragment must tag every output).
        codec: ``json`` or ``bytes`` (:data:`CODECS`), for its input and its outputs.
        partitions: partitions of the channels it creates (see :data:`DEFAULT_PARTITIONS`).
        dead_letters: the channel of records that failed (default ``NAME.dead``).
        fast: the channels, among its source and its outputs, that are fast pipes: pushed from
            instance to instance, not through the centre, and not durable (:mod:`.fast`).
        cap: the most records of its outputs that may wait in each output channel for the
            channel's slowest consumer group: past it, the instances are held back
            (:mod:`minipool.topics.room`). ``None``: no cap (the topic's retention bounds it).
    """

    name: str
    source: str
    fragment: pl.Pipeline | pl.Stage
    output: str | None = None
    codec: str = "json"
    partitions: int = DEFAULT_PARTITIONS
    dead_letters: str = field(default="")
    fast: tuple[str, ...] = ()
    cap: int | None = None

    def __post_init__(self) -> None:
        check_topic_name(self.name)
        check_topic_name(self.source)
        if self.output is not None:
            check_topic_name(self.output)
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, not {self.codec!r}")
        if not self.dead_letters:
            object.__setattr__(self, "dead_letters", f"{self.name}.dead")
        check_topic_name(self.dead_letters)
        object.__setattr__(self, "fast", tuple(check_topic_name(c) for c in self.fast))
        if self.cap is not None and (type(self.cap) is not int or self.cap < 1):
            raise ValueError(f"cap must be a positive number of records, not {self.cap!r}")
        if self.dead_letters in self.fast:
            raise ValueError("the dead letter channel cannot be a fast pipe: it would not keep them")

    def encode(self, value: Any) -> bytes:
        return CODECS[self.codec][0](value)

    def decode(self, data: bytes) -> Any:
        return CODECS[self.codec][1](data)

    def apply(self, values: list[Any]) -> list[tuple[str, Any]]:
        """Run the fragment on one batch: its outputs as ``(channel, value)`` pairs.

        Raises:
            Exception: whatever the fragment raised (the batch produced nothing).
            ValueError: an output has no channel and the pipe set no ``output``.
        """
        head = pl.source(values)
        outputs = (head | self.fragment).run() if values else []
        routed = []
        for record in outputs:
            if isinstance(record, Routed):
                routed.append((record.channel, record.value))
            elif self.output is None:
                raise ValueError(f"pipe set {self.name!r} has no output channel for an untagged record")
            else:
                routed.append((self.output, record))
        return routed
