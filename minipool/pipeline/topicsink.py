"""Topics as a pipeline's sink: every record written once, across a SIGKILL and a rerun.

Technique: Kafka Streams' exactly-once output, by bookkeeping instead of transactions. The
sink, :func:`to_topic`, is a terminal stage whose effect is outside the process. It writes a
checkpoint's records *after* the journal append that holds them and waits for every
acknowledgement before the next checkpoint, so after a crash at most the last journaled chunk
is partly written. Its state remembers the topic's end offset when the pipeline first started
and how many records it owes; on a rerun it reads the topic's end offset and writes again
exactly the owed records that are missing. That needs the pipeline to be the topic's only
producer, and it checks: a topic holding records nobody owes is refused with a clear error,
never silently duplicated.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .core import Terminal
from .errors import PipelineError
from .runtime import Runtime, TerminalRuntime
from .stats import StageStats
from .topics import topic_name

__all__ = ["TopicProducer", "ProducerLink", "SinkState", "to_topic"]

log = logging.getLogger("minipool.pipeline")


class TopicProducer(Protocol):
    """What a topic sink needs from a producer (:class:`ProducerLink` over minipool's)."""

    def send(self, value: bytes, key: bytes | None) -> None:
        """Queue one record for the sink's topic."""
        ...

    def flush(self) -> None:
        """Return once every queued record is acknowledged; raise if one was refused."""
        ...

    def end_offset(self) -> int:
        """How many records were ever appended to the topic (all partitions)."""
        ...

    def close(self) -> None: ...


class ProducerLink:
    """A :class:`TopicProducer` over :class:`minipool.topics.Producer`, writing one topic.

    ``flush`` raises the first failure among the records sent since the last flush (the
    producer's own ``flush`` waits for every outcome but reports none).
    """

    def __init__(self, topic: str, *, address: str | None, pool: Any, authkey: Any) -> None:
        from ..topics.producer import Producer

        self.topic, self.where = topic, {"address": address, "pool": pool, "authkey": authkey}
        self.producer = Producer(address, pool=pool, authkey=authkey)
        self.futures: list[Any] = []

    def send(self, value: bytes, key: bytes | None) -> None:
        self.futures.append(self.producer.send(self.topic, value, key))

    def flush(self) -> None:
        self.producer.flush()
        futures, self.futures = self.futures, []
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def end_offset(self) -> int:
        from ..topics.consumer import Consumer

        with Consumer(self.topic, auto_offset_reset="latest", **self.where) as reader:
            return sum(reader.positions())

    def close(self) -> None:
        self.producer.close()


@dataclass
class SinkState:
    """What a topic sink journals: the topic's end offset when the pipeline first started
    (``base``), records it has asked to write (``written``) and the last journaled chunk, which
    a crash may have left partly written (``tail``; empty once acknowledged)."""

    base: int | None = None
    written: int = 0
    tail: list[tuple[bytes | None, bytes]] = field(default_factory=list)


def _encode(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    try:
        return json.dumps(item).encode()
    except TypeError as exc:
        raise PipelineError(f"to_topic() writes bytes, str or JSON; use value= to encode: {exc}") from None


class _TopicWriter(Terminal):
    """The fold of one run of a topic sink: ``state`` is a :class:`SinkState`."""

    def __init__(
        self,
        label: str,
        producer: TopicProducer,
        key: Callable[[Any], Any] | None,
        value: Callable[[Any], Any] | None,
    ) -> None:
        self.label, self.producer, self.key, self.value = label, producer, key, value

    def initial(self) -> SinkState:
        return SinkState()

    def _encoded(self, records: list[Any]) -> list[tuple[bytes | None, bytes]]:
        key, value = self.key, self.value
        return [
            (None if key is None else _encode(key(r)), _encode(r if value is None else value(r)))
            for r in records
        ]

    def _write(self, items: list[tuple[bytes | None, bytes]]) -> None:
        for k, v in items:
            self.producer.send(v, k)
        self.producer.flush()

    def apply(self, state: SinkState, records: list[Any]) -> SinkState:
        if records:
            self._write(self._encoded(records))
            state.written += len(records)
        return state

    def replay(self, state: SinkState, records: list[Any]) -> SinkState:
        state.written += len(records)
        state.tail = self._encoded(records)
        return state

    def resume(self, state: SinkState) -> SinkState:
        end = self.producer.end_offset()
        if state.base is None:
            return SinkState(end, 0, [])
        missing = state.written - (end - state.base)
        if not 0 <= missing <= len(state.tail):
            raise PipelineError(
                f"{self.label}: the topic holds {end - state.base} records since this pipeline "
                f"started, but it wrote {state.written}: exactly-once needs the pipeline to be the "
                "topic's only producer"
            )
        if missing:
            log.info("%s: writing again the %d records a crash cut off", self.label, missing)
            self._write(state.tail[len(state.tail) - missing :])
        return SinkState(state.base, state.written, [])

    def result(self, state: SinkState) -> int:
        return state.written

    def close(self) -> None:
        self.producer.close()


class _ToTopic(Terminal):
    """The declaration; each run opens its own producer and :class:`_TopicWriter`."""

    def __init__(
        self,
        topic: str,
        connect: Callable[[], TopicProducer],
        key: Callable[[Any], Any] | None,
        value: Callable[[Any], Any] | None,
        name: str | None,
    ) -> None:
        self.topic, self.connect, self.key, self.value, self.name = topic, connect, key, value, name
        self.label = f"to_topic({topic})"

    def open(self, name: str, run: Any, stats: StageStats) -> Runtime:
        return TerminalRuntime(_TopicWriter(name, self.connect(), self.key, self.value))


def to_topic(
    topic: str,
    *,
    address: str | None = None,
    pool: Any = None,
    authkey: bytes | str | None = None,
    key: Callable[[Any], Any] | None = None,
    value: Callable[[Any], Any] | None = None,
    producer: Callable[[], TopicProducer] | None = None,
    name: str | None = None,
) -> Terminal:
    """Terminal: write every record to ``topic``; ``run()`` returns how many were written.

    A record (or ``value(record)``) that is bytes is written as it is, a str as UTF-8, anything
    else as JSON; ``key(record)`` likewise gives the record's key (records with one key keep
    their order in one partition). With ``run(journal=DIR)`` every record is written exactly
    once across crashes and reruns, provided the pipeline is the topic's only producer.

    ``address``/``authkey`` or ``pool=`` say where the topic is, as for :func:`from_topic`;
    ``producer=`` makes the producer instead (any :class:`TopicProducer`).

    Raises:
        PipelineError: none of ``address``, ``pool``, ``producer``; a topic name that is not
            a name.
    """
    topic_name(topic)
    if producer is None:
        if address is None and pool is None:
            raise PipelineError("to_topic() needs address= or pool= (the coordinator hosting the topic)")
        producer = functools.partial(ProducerLink, topic, address=address, pool=pool, authkey=authkey)
    return _ToTopic(topic, producer, key, value, name)
