"""A live dashboard and monitoring API for a coordinator (Celery's Flower, seed 002).

Technique: *watch a system without slowing it*. The coordinator hands every Effects object it
applies to an observer that folds it into a bounded history with no object made per task
(:mod:`~minipool.dashboard.history`); a monitor thread adds periodic looks at the coordinator
(:mod:`~minipool.dashboard.monitor`); a pure API answers from them
(:mod:`~minipool.dashboard.api`, :mod:`~minipool.dashboard.metrics`); a small server speaks
HTTP and WebSocket with minipool's own code (:mod:`~minipool.dashboard.server`) to one static
page (:mod:`~minipool.dashboard.page`). A dashboard in another process watches through the
coordinator's normal authenticated connection (:mod:`~minipool.dashboard.remote`).

Usage::

    python -m minipool coordinator --bind tcp://127.0.0.1:5555 --dashboard 127.0.0.1:8080
    Pool(4, dashboard="127.0.0.1:0")         # pool.dashboard.url
"""

from __future__ import annotations

from typing import Any

from .api import Api
from .history import History
from .metrics import exposition
from .monitor import Monitor
from .server import DashboardServer, dashboard_token

__all__ = ["Dashboard", "dashboard_token"]


class Dashboard:
    """A coordinator's dashboard: its history and monitor, and (once :meth:`serve` is called)
    its web server.

    Args:
        coordinator: the :class:`~minipool.cluster.coordinator.Coordinator` to watch.
        supervisor, elastic: its local workers' supervisor and autoscaling loop, if any
            (the worker and autoscale controls use them).
    """

    def __init__(self, coordinator: Any, *, supervisor: Any = None, elastic: Any = None) -> None:
        self.monitor = Monitor(coordinator, History(), supervisor=supervisor, elastic=elastic)
        self.api = Api(self.monitor)
        self.server: DashboardServer | None = None
        coordinator.dashboard_api = self.remote_call

    def remote_call(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        """A DASHBOARD request from a dashboard in another process: the API, or ``/metrics``."""
        if target == "/metrics":
            return 200, self.metrics()
        return self.call(method, target, body)

    def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
        """Answer one API request (see :class:`~minipool.dashboard.api.Api`)."""
        return self.api.call(method, target, body)

    def metrics(self) -> str:
        """The ``/metrics`` page."""
        return exposition(self.monitor.coordinator, self.monitor.history, self.api.section("topics"))

    def wait(self, version: int, timeout: float) -> int:
        return self.monitor.wait(version, timeout)

    def serve(self, token: str, bind: str = "127.0.0.1:0") -> str:
        """Serve the page, the API and ``/metrics`` on ``bind``; return the base URL.

        ``token``: usually :func:`dashboard_token` of the coordinator's authkey.
        """
        self.server = DashboardServer(self, token, bind)
        return self.server.url

    @property
    def url(self) -> str | None:
        return None if self.server is None else self.server.url

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.monitor.coordinator.dashboard_api == self.remote_call:
            self.monitor.coordinator.dashboard_api = None
        self.monitor.close()
