"""The dashboard's REST API: a request's method, path and body in, a status and JSON out.

Technique: *handlers as a pure routing table*. Nothing here touches a socket: :meth:`Api.call`
takes ``(method, target, body)`` and returns ``(status, value)``, so the HTTP server, the
WebSocket feed and a dashboard watching another process's coordinator all call the same
function, and tests call it with plain strings. Every input is checked before it is used:
an unknown path or id is a 404, a malformed query or body a 400, a query value past its bound
a 400 too, and each carries a JSON ``{"error": ...}`` -- the coordinator goes on whatever
arrives. Request bodies are JSON, never pickles.

Control (cancel, terminate, stop or restart a worker, autoscale bounds) uses what the
coordinator, its supervisor and its autoscaler already do; see docs/dashboard.md.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..cluster.effects import Effects
from ..cluster.state import TaskState
from .metrics import count_connections
from .monitor import Monitor, lease_states

__all__ = ["Api", "ApiError", "MAX_LIMIT", "TASK_STATES"]

#: Most records one listing returns.
MAX_LIMIT = 1000
TASK_STATES = ("queued", "reserved", "running", "done", "failed", "cancelled", "terminated")
_TASK_ID = re.compile(r"([A-Za-z0-9_.:-]{1,128})-([0-9]{1,18})")
_WORKER_ID = re.compile(r"[A-Za-z0-9_.:@/#-]{1,128}")
_MAX_QUERY = 2048


class ApiError(Exception):
    """A request the API refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int(query: dict[str, list[str]], name: str, default: int, high: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    if not raw.isdigit() or len(raw) > 12 or int(raw) > high:
        raise ApiError(400, f"{name} must be a whole number from 0 to {high}")
    return int(raw)


class Api:
    """Routes API requests to the monitor's history and the coordinator's controls."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.history = monitor.history
        self.coordinator = monitor.coordinator
        get: dict[str, Callable[[dict[str, list[str]]], Any]] = {
            "/api/overview": self.overview,
            "/api/workers": self.workers,
            "/api/tasks": self.tasks,
            "/api/events": self.events,
            "/api/series": lambda q: list(self.history.samples),
            "/api/topics": lambda q: self.section("topics"),
            "/api/pipesets": self.pipesets,
            "/api/chaos": self.chaos,
            "/api/journal": lambda q: self.journal(),
        }
        self._get = get

    def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
        """Answer one request: ``(status, JSON-able value)``; errors are ``{"error": ...}``."""
        try:
            return 200, self._route(method, target, body)
        except ApiError as exc:
            return exc.status, {"error": str(exc)}

    def _route(self, method: str, target: str, body: bytes) -> Any:
        if len(target) > _MAX_QUERY:
            raise ApiError(414, f"request target longer than {_MAX_QUERY} characters")
        parts = urlsplit(target)
        try:
            query = parse_qs(parts.query, strict_parsing=bool(parts.query), max_num_fields=20)
        except ValueError as exc:
            raise ApiError(400, f"malformed query: {exc}") from None
        path = parts.path.rstrip("/") or "/"
        handler = self._get.get(path)
        if handler is not None:
            if method != "GET":
                raise ApiError(405, f"{path} is read with GET")
            return handler(query)
        segments = [unquote(segment) for segment in path.split("/")]
        if len(segments) in (4, 5) and segments[:3] in (["", "api", "tasks"], ["", "api", "workers"]):
            if len(segments) == 4:
                if method != "GET" or segments[2] != "tasks":
                    raise ApiError(405 if segments[2] == "tasks" else 404, f"no GET handler for {path[:80]}")
                return self.task(segments[3])
            if method != "POST":
                raise ApiError(405, "control actions are POSTs")
            return self.control(segments[2], segments[3], segments[4])
        if path == "/api/autoscale":
            if method == "GET":
                return self.autoscale_bounds()
            if method != "POST":
                raise ApiError(405, "/api/autoscale is read with GET and changed with POST")
            return self.set_autoscale(body)
        raise ApiError(404, f"no such endpoint {path[:80]!r}")

    # -- reading -----------------------------------------------------------------------------

    def overview(self, query: dict[str, list[str]]) -> dict[str, Any]:
        report = self.coordinator.status()
        workers = report.pop("workers")
        report.pop("registry", None)
        report["workers"] = len(workers)
        # Of the leased tasks, those waiting in a worker's prefetch have not started.
        report["reserved"] = sum(max(0, w["inflight"] - w["slots"]) for w in workers)
        report["running"] -= report["reserved"]
        if query.get("workers"):  # the live feed: one status() call for both
            report["workers_list"] = workers
        history = self.history
        report["history"] = {
            "tasks": len(history.leases),
            "events": len(history.events),
            "folds": history.folds,  # (the live feed's sign that the tasks may have changed)
            "last_event": history.last_seq,
        }
        report["sections"] = sorted(self.coordinator.sections)
        with self.coordinator.lock:
            scheduler = self.coordinator.scheduler
            peers = list(scheduler.workers.values()), [c for c in scheduler.clients.values() if not c.monitor]
        report["connections"] = {
            f"{t} {role}s": n for (t, role), n in sorted(count_connections(*peers).items())
        }
        report["autoscale"] = self.autoscale_bounds()
        return report

    def workers(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        return self.coordinator.status()["workers"]

    def tasks(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        state = query.get("state", [""])[-1]
        if state and state not in TASK_STATES:
            raise ApiError(400, f"state must be one of {', '.join(TASK_STATES)}")
        name = query.get("name", [""])[-1]
        if len(name) > 200:
            raise ApiError(400, "name filter longer than 200 characters")
        limit = _int(query, "limit", 100, MAX_LIMIT)
        self.monitor.refresh()  # the workers' events as fresh as the tasks
        if state == "queued":
            return self.monitor.queued(limit)
        return self.history.select(state or None, name or None, limit, self.monitor.live)

    def task(self, task_id: str) -> dict[str, Any]:
        match = _TASK_ID.fullmatch(task_id)
        if match is None:
            raise ApiError(400, "a task id is CLIENT-NUMBER")
        record = self.history.find((match.group(1), int(match.group(2))), self.monitor.live)
        if record is None:
            for queued in self.monitor.queued(MAX_LIMIT):
                if queued["id"] == task_id:
                    return queued
            raise ApiError(404, f"no task {task_id} in the history")
        return record.to_json(detail=True)

    def events(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        since = _int(query, "since", 0, 10**15)
        self.monitor.refresh()
        return self.history.events_since(since, _int(query, "limit", 200, MAX_LIMIT))

    def section(self, name: str) -> list[Any]:
        """A provider's state (``coordinator.sections[name]()``), or ``[]`` when none is set."""
        provider = self.coordinator.sections.get(name)
        return list(provider()) if provider is not None else []

    def pipesets(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        return self._registered("pipe-set")

    def chaos(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Chaos proxies that report their counters here (``chaos --report-to``)."""
        return self._registered("chaos-proxy")

    def _registered(self, kind: str) -> list[dict[str, Any]]:
        """The live registry entries whose metadata says they are of ``kind``."""
        with self.coordinator.lock:
            entries = [e.to_json() for e in self.coordinator.registry.entries()]
        return [e for e in entries if (e.get("meta") or {}).get("kind") == kind]

    def journal(self) -> dict[str, Any] | None:
        journal = self.coordinator.journal
        if journal is None:
            return None
        report = journal.describe()
        files = [f for f in os.scandir(report["directory"]) if f.is_file()]
        report["bytes"] = sum(f.stat().st_size for f in files)
        report["files"] = len(files)
        report["last_write"] = max((f.stat().st_mtime for f in files), default=None)
        snapshots = [f.stat().st_mtime for f in files if f.name.endswith(".snap")]
        report["last_snapshot"] = max(snapshots, default=None)
        return report

    def autoscale_bounds(self) -> dict[str, int] | None:
        elastic = self.monitor.elastic
        if elastic is None:
            return None
        scaler = elastic.autoscaler
        return {"min_workers": scaler.min_workers, "max_workers": scaler.max_workers}

    # -- control -----------------------------------------------------------------------------

    def control(self, what: str, ident: str, action: str) -> dict[str, Any]:
        if what == "tasks":
            if action not in ("cancel", "terminate"):
                raise ApiError(404, "a task can be cancelled or terminated")
            match = _TASK_ID.fullmatch(ident)
            if match is None:
                raise ApiError(400, "a task id is CLIENT-NUMBER")
            return self.end_task(ident, (match.group(1), int(match.group(2))), action)
        if action not in ("stop", "restart"):
            raise ApiError(404, "a worker can be stopped or restarted")
        if _WORKER_ID.fullmatch(ident) is None:
            raise ApiError(400, "malformed worker id")
        return self.worker_action(ident, action)

    def end_task(self, task_id: str, key: tuple[str, int], action: str) -> dict[str, Any]:
        coordinator = self.coordinator
        fx = Effects()
        with coordinator.lock:
            task = coordinator.scheduler.by_key.get(key)
            state = None if task is None else task.state
            if state is TaskState.QUEUED and action == "terminate" and not task.leased_at:
                raise ApiError(409, "the task has not started: cancel it")
            if state is TaskState.RUNNING and action == "cancel":
                raise ApiError(409, "the task is running: terminate it")
            worker = None if task is None else task.worker
            pid = None if worker is None else worker.meta.get("pid")
            # Reserved (in its worker's prefetch, not started): revoked, its worker goes on, and
            # the result it sends later is dropped as a duplicate.
            reserved = lease_states(coordinator.scheduler, [key]).get(key, ("",))[0] == "reserved"
            was = coordinator.scheduler.revoke(key, f"{action}led from the dashboard", fx)
        if was is None:
            raise ApiError(404, f"no queued or running task {task_id}")
        coordinator.apply(fx)
        self.history.note_outcome(key, "cancelled" if action == "cancel" else "terminated")
        restarted = False
        if (
            action == "terminate"
            and not reserved
            and isinstance(pid, int)
            and self.monitor.supervisor is not None
        ):
            restarted = self._restart_process(pid)  # the only way to stop a call mid-run
        was_named = "reserved" if reserved else was.value
        return {"task": task_id, "was": was_named, "action": action, "worker_restarted": restarted}

    def worker_action(self, worker_id: str, action: str) -> dict[str, Any]:
        with self.coordinator.lock:
            worker = self.coordinator.scheduler.workers.get(worker_id)
            pid = None if worker is None else worker.meta.get("pid")
        if worker is None:
            raise ApiError(404, f"no worker {worker_id}")
        supervisor = self.monitor.supervisor
        if supervisor is None or not isinstance(pid, int) or pid not in supervisor.pids:
            raise ApiError(409, "this worker's process is not supervised by this coordinator")
        if action == "restart":
            self._restart_process(pid)
        else:
            supervisor.remove(pid)
        with self.history.lock:
            self.history.event(f"worker-{action}", worker=worker.name, pid=pid)
        return {"worker": worker_id, "action": action, "pid": pid}

    def _restart_process(self, pid: int) -> bool:
        supervisor = self.monitor.supervisor
        if not supervisor.remove(pid):
            return False
        supervisor.add()
        return True

    def set_autoscale(self, body: bytes) -> dict[str, int]:
        elastic = self.monitor.elastic
        if elastic is None:
            raise ApiError(409, "this coordinator does not autoscale")
        try:
            wanted = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body must be JSON") from None
        scaler = elastic.autoscaler
        if not isinstance(wanted, dict):
            raise ApiError(400, 'send {"min_workers": N, "max_workers": M}')
        low = wanted.get("min_workers", scaler.min_workers)
        high = wanted.get("max_workers", scaler.max_workers)
        if not all(type(n) is int for n in (low, high)) or not 0 <= low <= high or not 1 <= high <= 1024:
            raise ApiError(
                400, "need whole numbers 0 <= min_workers <= max_workers, 1 <= max_workers <= 1024"
            )
        scaler.min_workers, scaler.max_workers = low, high
        with self.history.lock:
            self.history.event("autoscale-bounds", min_workers=low, max_workers=high)
        return {"min_workers": low, "max_workers": high}
