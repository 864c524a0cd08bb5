"""One instance of a pipe set: pull a batch from the exchange channel, run the fragment, push
the outputs, acknowledge the batch; and stay registered while alive.

Technique: *a consumer group member that is also a registered service* (seed 001's pipe with a
service ID, found through the registry), *and a transactional step* (Kafka's
"consume-transform-produce" transactions). The instances of a pipe set are members of one
consumer group named after it, so the coordinator shares the channel's partitions among them
and hands a dead member's unacknowledged records to the others. An instance sends a batch's
outputs and the acknowledgement of its inputs in one TOPIC_TRANSACT message, which the
coordinator applies as one step: a batch's outputs are appended exactly when its inputs are
acknowledged. An instance killed before the step leaves its inputs unacknowledged (they are
redelivered, and their outputs made once, by another instance); one killed after it has nothing
left to do. If the inputs were redelivered meanwhile and another instance got there first, the
step is refused, nothing is appended, and the instance drops those inputs and redoes the rest.
The coordinator makes the step atomic on disk too (:mod:`minipool.topics.step`): killed inside
it, it keeps or discards the whole step on restart, and a step this instance sends again after
reconnecting is refused as done, so the instance's retry loop needs no bookkeeping of its own.

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

from ..errors import ConnectionClosed, TopicError
from ..topics.connection import connect, request, retrying
from ..topics.records import Record, pack_entries, unpack_chunks
from ..wire import Kind
from .fast import Inlet, Outlet, service_of
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
    refused: int = 0  # steps refused: inputs another instance had settled first
    held: int = 0  # steps refused for now: an output channel was at the pipe set's cap
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
        reconnect_timeout: how long to keep trying after the coordinator goes away.
        listen: where the inlet of a fast pipe source listens (any transport).
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
        listen: str = "tcp://127.0.0.1:0",
        reconnect_timeout: float = 60.0,
        **transport_options: Any,
    ) -> None:
        self.pipe_set = pipe_set
        self.address = address
        self.slowdown = slowdown
        self.ttl = ttl
        self.max_records = max_records
        self.reconnect_timeout = reconnect_timeout
        self.key = f"{pipe_set.name}/{socket.gethostname()}:{os.getpid()}:{id(self) % 10_000}"
        self.stats = InstanceStats()
        self._stop = threading.Event()
        self.client = connect(address, None, authkey, reconnect_timeout, dict(transport_options))
        for channel in {pipe_set.source, *([pipe_set.output] if pipe_set.output else [])}:
            self._create(channel)
        self._admin({"op": "join", "reset": "earliest"})
        self._authkey = authkey
        self._options = dict(transport_options)
        self.inlet = None
        if pipe_set.source in pipe_set.fast:  # records arrive pushed, not pulled
            self.inlet = Inlet(listen, authkey, **self._options)
        self.outlets: dict[str, Outlet] = {}
        self.balance = balance
        if balance:
            self._admin({"op": "balance", "by": "pull-time"})
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="minipool-pipe-set")
        self._renewer.start()

    def _ask(self, kind: Kind, headers: dict[str, Any], body: bytes = b"", timeout: float = 30.0) -> Any:
        """One request, asked again after each lost connection for ``reconnect_timeout``
        seconds, or until the instance is told to stop.

        Raises:
            ConnectionClosed: the coordinator did not come back in time, or the instance stopped.
        """
        client = self.client
        give_up = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                return retrying(client, 1.0, lambda: request(client, kind, headers, timeout, body))
            except ConnectionClosed:
                if self._stop.is_set() or time.monotonic() >= give_up:
                    raise

    def _admin(self, headers: dict[str, Any]) -> Any:
        group = {"topic": self.pipe_set.source, "group": self.pipe_set.name}
        return self._ask(Kind.TOPIC_ADMIN, {**group, **headers})

    def _create(self, channel: str) -> None:
        """Create ``channel`` with the pipe set's partitions, unless it already exists (with
        whatever partitions it has: a channel made on first use has one, and one instance)."""
        headers = {"op": "create", "topic": channel, "config": {"partitions": self.pipe_set.partitions}}
        try:
            self._ask(Kind.TOPIC_ADMIN, headers)
        except TopicError as exc:
            log.info("channel %s: %s", channel, exc)

    # -- the work ----------------------------------------------------------------------------

    def run(self) -> None:
        """Pull, process and push until :meth:`stop` (or a signal) ends it."""
        try:
            while not self._stop.is_set():
                if self.inlet is not None:
                    records = self._pushed(self.inlet.take(0.2))
                else:
                    records = self.pull(0.2)
                if records:
                    self.process(records)
            if self.inlet is not None:
                self._drain(self.inlet)
        except ConnectionClosed:
            if not self._stop.is_set():
                raise
        finally:
            self.close()

    def _drain(self, inlet: Inlet) -> None:
        """A clean stop on a fast pipe: leave the registry (no new pushes come), stop the
        inlet, and process what it had already accepted."""
        self._deregister()
        inlet.close()
        while values := inlet.take(0):
            self.process(self._pushed(values))

    def _pushed(self, values: list[bytes]) -> list[Record]:
        """A batch pushed through a fast pipe, as records (of no partition: nothing to
        acknowledge)."""
        return [Record(self.pipe_set.source, -1, i, 0.0, None, v) for i, v in enumerate(values)]

    def pull(self, wait: float) -> list[Record]:
        """The next records of the channel the group gives this instance (waiting up to
        ``wait`` seconds for some)."""
        headers = {
            "topic": self.pipe_set.source,
            "group": self.pipe_set.name,
            "reset": "earliest",
            "max": self.max_records,
            "wait": wait,
        }
        return unpack_chunks(self.pipe_set.source, self._ask(Kind.TOPIC_FETCH, headers, timeout=wait + 30))

    def process(self, records: list[Record]) -> None:
        """One batch: run the fragment, then append its outputs and acknowledge its inputs in
        one step; if some inputs were meanwhile settled by another instance, drop them and
        redo the rest."""
        started = time.perf_counter()
        if self.slowdown:
            time.sleep(self.slowdown * len(records))
        outputs = self._outputs(records)
        if not self._push_fast(outputs):
            return  # stopping, with no inlet to take them: the inputs stay unacknowledged
        while True:
            reply = self._step(records, [(c, d) for c, d in outputs if c not in self.pipe_set.fast])
            if reply.get("full"):  # held at a channel's cap until a consumer makes room
                self.stats.held += 1
                if self._stop.is_set():
                    return
                continue
            if not reply["done"]:
                break
            self.stats.refused += 1
            settled = {(p, o) for p, first, end in reply["done"] for o in range(first, end)}
            records = [r for r in records if (r.partition, r.offset) not in settled]
            if not records:
                return
            outputs = self._outputs(records)  # the rest, redone (its fast outputs went already)
        elapsed = (time.perf_counter() - started) / len(records)
        s = self.stats
        s.records += len(records)
        s.outputs += len(outputs)
        s.dead += sum(1 for channel, _ in outputs if channel == self.pipe_set.dead_letters)
        s.batches += 1
        s.seconds_per_record = (
            elapsed
            if s.seconds_per_record is None
            else _ALPHA * elapsed + (1 - _ALPHA) * s.seconds_per_record
        )

    def _step(self, records: list[Record], durable: list[tuple[str, bytes]]) -> dict[str, Any]:
        """Ask the centre to append ``durable`` and acknowledge ``records`` as one step."""
        counts: dict[str, int] = {}
        for channel, _ in durable:
            counts[channel] = counts.get(channel, 0) + 1
        headers: dict[str, Any] = {
            "topic": self.pipe_set.source,
            "group": self.pipe_set.name,
            "acks": [] if self.inlet is not None else ranges(records),
            "outputs": [[channel, count] for channel, count in counts.items()],
        }
        if self.pipe_set.cap is not None:
            capped = [c for c in counts if c != self.pipe_set.dead_letters]  # letters are never held
            headers.update(caps=dict.fromkeys(capped, self.pipe_set.cap), wait=1.0)
        return self._ask(Kind.TOPIC_TRANSACT, headers, pack_entries([(None, data) for _, data in durable]))

    def _push_fast(self, outputs: list[tuple[str, bytes]]) -> bool:
        """Push the outputs bound for fast pipes to their inlets (waiting for one while none is
        registered); False if the instance stopped first."""
        by_channel: dict[str, list[bytes]] = {}
        for channel, data in outputs:
            if channel in self.pipe_set.fast:
                by_channel.setdefault(channel, []).append(data)
        for channel, values in by_channel.items():
            outlet = self.outlets.get(channel)
            if outlet is None:
                lookup = self.client.lookup
                outlet = Outlet(channel, lookup, self._authkey, self._stop, **self._options)
                self.outlets[channel] = outlet
            if not outlet.push(values):
                return False
        return True

    def _outputs(self, records: list[Record]) -> list[tuple[str, bytes]]:
        """The encoded outputs of a batch, grouped by channel, dead letters included."""
        values, letters = [], []
        for record in records:
            try:
                values.append(self.pipe_set.decode(record.value))
            except ValueError as exc:
                letters.append(self._dead(record.value.decode("utf-8", "replace"), exc))
        out = []
        for channel, value in self._apply(values, letters):
            try:
                out.append((channel, self.pipe_set.encode(value)))
            except (TypeError, ValueError) as exc:
                letters.append(self._dead(value, exc))
        out += [(self.pipe_set.dead_letters, encode_json(letter)) for letter in letters]
        out.sort(key=lambda item: item[0])  # stable: each channel's records keep their order
        return out

    def _apply(self, values: list[Any], letters: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        """The batch's outputs; if the fragment fails, record by record, so one bad record
        becomes a dead letter and the others go on."""
        try:
            return self.pipe_set.apply(values)
        except Exception:  # noqa: BLE001 - find the record that failed
            pass
        routed = []
        for value in values:
            try:
                routed += self.pipe_set.apply([value])
            except Exception as exc:  # noqa: BLE001 - the record's fault, reported with it
                letters.append(self._dead(value, exc))
        return routed

    def _dead(self, value: Any, exc: BaseException) -> dict[str, Any]:
        """The dead letter of a record that failed, with the error and the pipe set's name
        (always JSON on the dead letter channel, whatever the codec)."""
        return {
            "pipe_set": self.pipe_set.name,
            "instance": self.key,
            "error": f"{type(exc).__name__}: {exc}",
            "record": value
            if isinstance(value, (str, int, float, bool, list, dict, type(None)))
            else repr(value),
        }

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
            **asdict(s),
            "records_per_s": round(s.records_per_s, 1),
            "fast_pushed": sum(o.pushed for o in list(self.outlets.values())),
            "fast_resent": sum(o.resent for o in list(self.outlets.values())),
            "inlet": None if self.inlet is None else self.inlet.uri,
        }

    def _register(self, ttl: float) -> None:
        self.client.register(
            self.key, address=self.address, services=[self.pipe_set.name], ttl=ttl, meta=self.meta()
        )
        if self.inlet is not None:
            service = service_of(self.pipe_set.source)
            self.client.register(f"{service}/{self.key}", address=self.inlet.uri, services=[service], ttl=ttl)

    def _deregister(self) -> None:
        """Leave the registry at once: the instance (and its inlet) is gone."""
        self.client.deregister(self.key)
        if self.inlet is not None:
            self.client.deregister(f"{service_of(self.pipe_set.source)}/{self.key}")

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
        client = self.client
        headers = {"op": "describe", "topic": self.pipe_set.source, "group": self.pipe_set.name}
        group = request(client, Kind.TOPIC_ADMIN, headers, 5.0)[0]["groups"][0]
        if self.balance and group["balance"] != "pull-time":  # a restarted coordinator forgot it
            request(client, Kind.TOPIC_ADMIN, {**headers, "op": "balance", "by": "pull-time"}, 5.0)
        for member in group["members"]:
            if member["member"] == client.client_id:
                self.stats.partitions = len(member["partitions"])
                return float(member["weight"])
        return None

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Leave the group (what this instance holds goes to the others at once) and the
        registry, and disconnect."""
        self._stop.set()
        self._renewer.join(timeout=5)
        try:
            self._deregister()
            request(
                self.client,
                Kind.TOPIC_ADMIN,
                {"op": "leave", "topic": self.pipe_set.source, "group": self.pipe_set.name},
                5.0,
            )
        except Exception:  # noqa: BLE001 - the coordinator is gone: leaving is implied
            pass
        for outlet in self.outlets.values():
            outlet.close()
        if self.inlet is not None:
            self.inlet.close()
        self.client.close()


def ranges(records: list[Record]) -> list[list[int]]:
    """``[partition, first, end]`` ranges covering ``records`` (a batch in a few numbers)."""
    out: list[list[int]] = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        last = out[-1] if out else None
        if last is not None and last[0] == record.partition and last[2] == record.offset:
            last[2] += 1
        else:
            out.append([record.partition, record.offset, record.offset + 1])
    return out
