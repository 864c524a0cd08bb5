"""``/metrics``: the coordinator's numbers in the Prometheus text exposition format (0.0.4).

Technique: *pull-based monitoring*. Prometheus scrapes a plain-text page every few seconds;
each family is a ``# HELP`` line, a ``# TYPE`` line (counter, gauge or histogram) and one
sample per label set. Counters only grow (Prometheus computes rates from them, so a restart is
seen as a reset, not a drop); gauges go up and down; a histogram is cumulative ``_bucket``
counters with an ``le`` label, ending at ``+Inf``, and a ``_sum`` and ``_count``. Label values
are escaped (backslash, quote, newline) because a topic or worker name is anyone's text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .history import RUNTIME_BUCKETS, History
from .records import transport_of

__all__ = ["exposition", "count_connections", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[str, dict[str, Any], float]]
) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for suffix, labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(
            f"{name}{suffix}{{{label_text}}} {float(value)!r}" if labels else f"{name}{suffix} {value!r}"
        )
    return "\n".join(lines)


def _lag_samples(topics: list[Any]) -> list[tuple[str, dict[str, Any], float]]:
    """``(suffix, labels, lag)`` per topic, group and partition of a topics section."""
    samples = []
    for topic in topics:
        for group in topic.get("groups", ()) if isinstance(topic, dict) else ():
            lag = group.get("lag", 0)
            if isinstance(group.get("partitions"), list):  # minipool.topics: a lag per partition
                parts = [(p.get("partition"), p.get("lag", 0)) for p in group["partitions"]]
            else:
                parts = list(lag.items()) if isinstance(lag, dict) else [("all", lag)]
            for partition, value in parts:
                labels = {"topic": topic.get("name"), "group": group.get("name"), "partition": partition}
                samples.append(("", labels, float(value)))
    return samples


def count_connections(workers: list[Any], clients: list[Any]) -> dict[tuple[str, str], int]:
    """Connected peers by ``(transport, role)``."""
    connections: dict[tuple[str, str], int] = {}
    for role, peers in (("worker", workers), ("client", clients)):
        for peer in peers:
            key = (transport_of(peer), role)
            connections[key] = connections.get(key, 0) + 1
    return connections


def exposition(coordinator: Any, history: History, topics: list[Any]) -> str:
    """The whole ``/metrics`` page for ``coordinator`` and its dashboard's ``history``."""
    with coordinator.lock:
        scheduler = coordinator.scheduler
        counts = dict(scheduler.counts)
        queued = scheduler.queued
        # A worker's leases past its slots wait in its prefetch: reserved, not yet running.
        reserved = sum(max(0, len(w.leases) - w.slots) for w in scheduler.workers.values())
        running = scheduler.running - reserved
        workers = list(scheduler.workers.values())
        clients = [c for c in scheduler.clients.values() if not c.monitor]
    connections = count_connections(workers, clients)
    with history.lock:
        buckets = list(history.runtime_counts)
        runtime_sum = history.runtime_sum
        byte_counts = dict(history.bytes)
    cumulative = 0
    histogram: list[tuple[str, dict[str, Any], float]] = []
    for bound, count in zip([*map(str, RUNTIME_BUCKETS), "+Inf"], buckets, strict=True):
        cumulative += count
        histogram.append(("_bucket", {"le": bound}, cumulative))
    histogram += [("_sum", {}, runtime_sum), ("_count", {}, cumulative)]
    families = [
        _family(
            "minipool_tasks_total",
            "counter",
            "Tasks by how they ended (submitted counts every accepted task).",
            [("", {"state": k}, counts.get(k, 0)) for k in ("submitted", "done", "failed", "cancelled")],
        ),
        _family(
            "minipool_tasks_requeued_total",
            "counter",
            "Tasks requeued after their worker was lost.",
            [("", {}, counts.get("requeued", 0))],
        ),
        _family(
            "minipool_workers_lost_total",
            "counter",
            "Workers lost.",
            [("", {}, counts.get("workers_lost", 0))],
        ),
        _family(
            "minipool_tasks_active",
            "gauge",
            "Tasks now queued (waiting for a worker) or running (started by one).",
            [("", {"state": "queued"}, queued), ("", {"state": "running"}, running)],
        ),
        _family(
            "minipool_tasks_reserved",
            "gauge",
            "Tasks a worker has received in its prefetch and not started yet.",
            [("", {}, reserved)],
        ),
        _family("minipool_queue_depth", "gauge", "Tasks waiting for a worker.", [("", {}, queued)]),
        _family("minipool_workers", "gauge", "Workers connected.", [("", {}, len(workers))]),
        _family(
            "minipool_worker_slots",
            "gauge",
            "Slots of the connected workers.",
            [("", {}, sum(w.slots for w in workers))],
        ),
        _family(
            "minipool_connections",
            "gauge",
            "Connected peers by transport and role.",
            [("", {"transport": t, "role": r}, n) for (t, r), n in sorted(connections.items())],
        ),
        _family(
            "minipool_task_runtime_seconds",
            "histogram",
            "Seconds from a task's lease to its outcome, as the coordinator saw them.",
            histogram,
        ),
        _family(
            "minipool_payload_bytes_total",
            "counter",
            "Task and result bytes through the coordinator, by transport and direction.",
            [("", {"transport": t, "direction": d}, n) for (t, d), n in sorted(byte_counts.items())],
        ),
        _family(
            "minipool_topic_lag",
            "gauge",
            "Records a consumer group has yet to read, per topic partition.",
            _lag_samples(topics),
        ),
    ]
    return "\n".join(families) + "\n"
