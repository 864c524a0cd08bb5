"""One instance of a pipe set: pull a batch from the exchange channel, run the fragment, push
the outputs, acknowledge the batch; and stay registered while alive.

Technique: *a consumer group member that is also a registered service* (seed 001's pipe with a
service ID, found through the registry). The instances of a pipe set are members of one
consumer group named after it, so the coordinator shares the channel's partitions among them
and hands a dead member's unacknowledged records to the others. An instance acknowledges a
batch only after the coordinator has acknowledged every output of it (``flush``), so a crash
between the two repeats the batch rather than losing it: at-least-once across pipe sets.

The instance renews a registry entry (key ``NAME/HOST:PID``, service ``NAME``, meta kind
``pipe-set``) every third of its TTL, carrying its measured rate and the weight the centre gives
it; an instance that dies stops renewing and its entry expires; one that stops cleanly
registers for an instant and so leaves at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import TopicError
from ..topics.connection import request, retrying
from ..wire import Kind
from .fragment import PipeSet, encode_json

__all__ = ["Instance", "InstanceStats", "REGISTRY_KIND"]

log = logging.getLogger("minipool.pipesets")

#: The ``meta["kind"]`` of a pipe set instance's registry entry (the dashboard lists them).
REGISTRY_KIND = "pipe-set"
_ALPHA = 0.3  # EWMA smoothing of the seconds per record, as the in-process services use


@dataclass
class InstanceStats:
    """What one instance has done, and what the centre makes of it."""

    records: int = 0  # input records processed
    outputs: int = 0  # records pushed to channels
    dead: int = 0  # input records sent to the dead letter channel
    batches: int = 0
    seconds_per_record: float | None = None  # EWMA of this instance's own processing time
    weight: float | None = None  # the centre's measure of it: records/s relative to the others
    partitions: int = 0  # partitions of the channel the centre gives it now

    @property
    def records_per_s(self) -> float:
        spr = self.seconds_per_record
        return 0.0 if not spr else 1.0 / spr


class Instance:
    """Serves ``pipe_set`` for the coordinator at ``address`` until :meth:`stop`.

    Args:
        pipe_set: what to run.
        address: the coordinator's URL (``authkey=`` or ``MINIPOOL_AUTHKEY``).
        slowdown: extra seconds per record (a slower machine, for experiments and tests).
        ttl: seconds the registry entry lives without a renewal.
        max_records: the most records one pull brings (the instance's credit).
        balance: ask the centre to share the channel by measured pull time (seed 001's
            dynamic weights; else partitions are dealt round-robin). It applies to the whole
            group: every instance of a pipe set should say the same.
        transport_options: TLS contexts, ``max_message``... as for a Consumer.
    """

    def __init__(
        self,
        pipe_set: PipeSet,
        address: str,
        *,
        authkey: bytes | str | None = None,
        slowdown: float = 0.0,
        ttl: float = 3.0,
        max_records: int = 100,
        balance: bool = True,
        reconnect_timeout: float = 60.0,
        **transport_options: Any,
    ) -> None:
        from ..topics import Consumer, Producer

        self.pipe_set = pipe_set
        self.address = address
        self.slowdown = slowdown
        self.ttl = ttl
        self.key = f"{pipe_set.name}/{socket.gethostname()}:{os.getpid()}:{id(self) % 10_000}"
        self.stats = InstanceStats()
        self._stop = threading.Event()
        self.producer = Producer(
            address, authkey=authkey, reconnect_timeout=reconnect_timeout, **dict(transport_options)
        )
        for channel in {pipe_set.source, *([pipe_set.output] if pipe_set.output else [])}:
            self._create(channel)
        self.consumer = Consumer(
            pipe_set.source,
            address=address,
            authkey=authkey,
            group=pipe_set.name,
            auto_offset_reset="earliest",
            max_records=max_records,
            wait=0.2,
            reconnect_timeout=reconnect_timeout,
            **dict(transport_options),
        )
        if balance:
            headers = {"op": "balance", "topic": pipe_set.source, "group": pipe_set.name, "by": "pull-time"}
            client = self.consumer.client
            retrying(client, 30.0, lambda: request(client, Kind.TOPIC_ADMIN, headers, 30.0))
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="minipool-pipe-set")
        self._renewer.start()

    def _create(self, channel: str) -> None:
        """Create ``channel`` with the pipe set's partitions, unless it already exists (with
        whatever partitions it has: a channel made on first use has one, and one instance)."""
        headers = {"op": "create", "topic": channel, "config": {"partitions": self.pipe_set.partitions}}
        client = self.producer.client
        try:
            retrying(client, 30.0, lambda: request(client, Kind.TOPIC_ADMIN, headers, 30.0))
        except TopicError as exc:
            log.info("channel %s: %s", channel, exc)

    # -- the work ----------------------------------------------------------------------------

    def run(self) -> None:
        """Pull, process and push until :meth:`stop` (or a signal) ends it."""
        try:
            while not self._stop.is_set():
                records = self.consumer.poll(0.2)
                if records:
                    self.process([r.value for r in records])
        finally:
            self.close()

    def process(self, raw: list[bytes]) -> None:
        """One batch: decode, run the fragment, push every output and wait until the centre has
        them all. The consumer acknowledges the batch with its next pull."""
        started = time.perf_counter()
        values, undecodable = [], []
        for data in raw:
            try:
                values.append(self.pipe_set.decode(data))
            except ValueError as exc:
                undecodable.append((data.decode("utf-8", "replace"), exc))
        if self.slowdown:
            time.sleep(self.slowdown * len(raw))
        routed = self._apply(values)
        for text, error in undecodable:
            self._dead(text, error)
        for channel, value in routed:
            self.producer.send(channel, self.pipe_set.encode(value))
        self.producer.flush()
        elapsed = (time.perf_counter() - started) / max(1, len(raw))
        s = self.stats
        s.records += len(raw)
        s.outputs += len(routed)
        s.batches += 1
        s.seconds_per_record = (
            elapsed
            if s.seconds_per_record is None
            else _ALPHA * elapsed + (1 - _ALPHA) * s.seconds_per_record
        )

    def _apply(self, values: list[Any]) -> list[tuple[str, Any]]:
        """The batch's outputs; if the fragment fails, record by record, so one bad record
        goes to the dead letter channel and the others go on."""
        try:
            return self.pipe_set.apply(values)
        except Exception:  # noqa: BLE001 - find the record that failed
            pass
        routed = []
        for value in values:
            try:
                routed += self.pipe_set.apply([value])
            except Exception as exc:  # noqa: BLE001 - the record's fault, reported with it
                self._dead(value, exc)
        return routed

    def _dead(self, value: Any, exc: BaseException) -> None:
        self.stats.dead += 1
        letter = {
            "pipe_set": self.pipe_set.name,
            "instance": self.key,
            "error": f"{type(exc).__name__}: {exc}",
            "record": value
            if isinstance(value, (str, int, float, bool, list, dict, type(None)))
            else repr(value),
        }
        self.producer.send(self.pipe_set.dead_letters, encode_json(letter))

    # -- the registry --------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """The registry entry's details (the dashboard and ``status`` show them)."""
        s = self.stats
        return {
            "kind": REGISTRY_KIND,
            "pipe_set": self.pipe_set.name,
            "instance": self.key,
            "source": self.pipe_set.source,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slowdown": self.slowdown,
            **{k: v for k, v in asdict(s).items()},
            "records_per_s": round(s.records_per_s, 1),
        }

    def _register(self, ttl: float) -> None:
        self.consumer.client.register(
            self.key, address=self.address, services=[self.pipe_set.name], ttl=ttl, meta=self.meta()
        )

    def _renew_loop(self) -> None:
        while True:
            try:
                self.stats.weight = self._weight()
                self._register(self.ttl)
            except Exception as exc:  # noqa: BLE001 - the coordinator is away: try again
                log.debug("cannot renew %s: %s", self.key, exc)
            if self._stop.wait(self.ttl / 3):
                return

    def _weight(self) -> float | None:
        """This instance's weight as the centre measured it (records per second relative to
        the other instances), and the partitions of the channel it is given."""
        client = self.consumer.client
        headers = {"op": "describe", "topic": self.pipe_set.source, "group": self.pipe_set.name}
        group = request(client, Kind.TOPIC_ADMIN, headers, 5.0)[0]["groups"][0]
        for member in group["members"]:
            if member["member"] == client.client_id:
                self.stats.partitions = len(member["partitions"])
                return float(member["weight"])
        return None

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Acknowledge what was processed, leave the group and the registry, disconnect."""
        self._stop.set()
        self._renewer.join(timeout=5)
        try:
            self._register(0.001)  # an entry that expires at once: the instance has left
        except Exception:  # noqa: BLE001 - the coordinator is gone: the entry expires anyway
            pass
        self.consumer.close()
        self.producer.close(timeout=10)
