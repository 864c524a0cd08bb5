"""The outflow: a channel's results handed to the caller, by iterator or by callback.

Technique: seed 001's *callback layer* (回调层, §2.5): "the user gets the data the pipes have
finished through the interface of the callback layer, the outflow (流出器) of figure 1". Here the
outflow is a member of a consumer group of the last channel, so several callers can share the
results (one group) or each see all of them (a group each), and a caller that restarts goes on
where its group stopped. Values are decoded with the pipe sets' codec; a result counts as
delivered once the caller has taken the next one (the consumer's auto-commit), so a caller that
dies mid-result sees it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .fragment import CODECS

__all__ = ["outflow"]


def outflow(
    channel: str,
    *,
    callback: Callable[[Any], object] | None = None,
    group: str = "outflow",
    codec: str = "json",
    timeout: float | None = None,
    **consumer_options: Any,
) -> Iterator[Any]:
    """The decoded values of ``channel``, oldest first, as an iterator; with ``callback``,
    ``callback(value)`` is called for each, here, and the iterator yields the callback's
    results. Ends after ``timeout`` seconds without a value (``None``: never).
    ``consumer_options``: ``address=``/``pool=``, ``authkey=``... as for a Consumer.

    Raises:
        ValueError: an unknown ``codec``.
    """
    from ..topics import Consumer

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, not {codec!r}")
    decode = CODECS[codec][1]
    consumer_options.setdefault("auto_offset_reset", "earliest")
    consumer = Consumer(channel, group=group, timeout=timeout, **consumer_options)

    def values() -> Iterator[Any]:
        with consumer:
            for record in consumer:
                value = decode(record.value)
                yield value if callback is None else callback(value)

    return values()
