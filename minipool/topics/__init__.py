"""Topics: a message log hosted by the coordinator, with producers, consumers and groups.

Technique: *a log, not a queue* (Kafka, Redis Streams; seed 004's message queue). A topic keeps
every record at an offset until retention drops it, so a consumer can replay it from any
offset; a consumer group shares the records among its members and remembers how far it got.
docs/topics.md teaches the ideas and lists the guarantees.

``from minipool.topics import Producer, Consumer``. The two are imported on first use (PEP 562):
the coordinator imports this package's server half (:mod:`.service`), and the client half
imports the coordinator's client, so importing both here would tie the two into a circle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .records import Record, RecordMetadata
from .topic import TopicConfig

if TYPE_CHECKING:
    from .consumer import Consumer
    from .producer import Producer

__all__ = ["Producer", "Consumer", "Record", "RecordMetadata", "TopicConfig"]


def __getattr__(name: str) -> Any:
    if name == "Producer":
        from .producer import Producer

        return Producer
    if name == "Consumer":
        from .consumer import Consumer

        return Consumer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
