"""Administering a coordinator's topics from a client: list, create, describe (kafka-python's
``KafkaAdminClient`` in miniature).

Technique: *the same request path as the data*. An admin request is a TOPIC_ADMIN message on
a topic client's connection, answered by a TOPIC_REPLY or a TOPIC_ERROR, so it works over every
transport and after a reconnect, and a refusal is a :class:`~minipool.errors.TopicError` that
says what was wrong. ``python -m minipool topics ...`` is this class on the command line.
"""

from __future__ import annotations

from typing import Any

from ..wire import Kind
from .connection import connect, request, retrying

__all__ = ["Admin"]


class Admin:
    """Lists, creates and describes the topics of a coordinator.

    Args:
        address: the coordinator's URL (``authkey=`` or ``MINIPOOL_AUTHKEY``).
        pool: a :class:`~minipool.Pool` whose embedded coordinator to use instead.
        timeout: seconds to wait for each answer.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        pool: Any = None,
        authkey: bytes | str | None = None,
        timeout: float = 10.0,
        reconnect_timeout: float = 10.0,
        **transport_options: Any,
    ) -> None:
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self.client = connect(address, pool, authkey, reconnect_timeout, transport_options)

    def _ask(self, headers: dict[str, Any]) -> Any:
        return retrying(
            self.client,
            self.reconnect_timeout,
            lambda: request(self.client, Kind.TOPIC_ADMIN, headers, self.timeout),
        )

    def topics(self) -> list[str]:
        """The names of the coordinator's topics."""
        return list(self._ask({"op": "list"}))

    def create(
        self,
        topic: str,
        partitions: int = 1,
        *,
        segment_bytes: int | None = None,
        retention_bytes: int | None = -1,
        retention_seconds: float | None = -1.0,
    ) -> dict[str, Any]:
        """Create ``topic`` (or check that it exists with these settings); return its
        ``describe()`` entry. ``retention_bytes=None`` or ``retention_seconds=None`` keep
        records without that limit (a topic on disk only); -1 takes the coordinator's default.

        Raises:
            TopicError: a bad name or setting, or the topic exists with other settings.
        """
        config: dict[str, Any] = {"partitions": partitions}
        if segment_bytes is not None:
            config["segment_bytes"] = segment_bytes
        if retention_bytes != -1:
            config["retention_bytes"] = retention_bytes
        if retention_seconds != -1.0:
            config["retention_seconds"] = retention_seconds
        return dict(self._ask({"op": "create", "topic": topic, "config": config}))

    def describe(self, topic: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
        """The coordinator's ``describe()`` of every topic, or of ``topic`` (and only its
        ``group``): partitions with offsets, groups with members, positions and lag
        (docs/topics.md lists the fields).

        Raises:
            TopicError: no such topic, or no such group on it.
        """
        return list(self._ask({"op": "describe", "topic": topic, "group": group}))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
