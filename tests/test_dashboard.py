"""The dashboard's API, metrics, security rules and safe pickle reading (the page itself is
driven in a real browser by test_dashboard_browser.py)."""

from __future__ import annotations

import http.client
import itertools
import json
import operator
import os
import pickle
import signal
import socket
import time
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from minipool import Pool
from minipool.cluster.coordinator import Coordinator
from minipool.dashboard import Dashboard, dashboard_token
from minipool.dashboard.history import History
from minipool.dashboard.peek import describe_call, describe_value, peek, render
from minipool.dashboard.remote import RemoteBackend
from minipool.errors import RemoteError
from minipool.transports.base import Options
from minipool.transports.websocket import connect as ws_connect

KEY = b"dashboard-test-key-0123456789abcdef"


def request(
    url: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(data) if kind.startswith("application/json") else data.decode()
    finally:
        conn.close()


def control_headers(url: str, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Origin": url}


def wait_for(condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def slow(x: float) -> float:
    time.sleep(x)
    return x


def shout(text: str) -> str:
    return f"<script>{text}</script>"


@pytest.fixture(scope="module")
def pool() -> Any:
    with Pool(2, authkey=KEY, dashboard="127.0.0.1:0") as p:
        wait_for(lambda: len(request(p.dashboard.url, "GET", "/api/workers")[1]) == 2, 20)
        yield p


def test_pool_serves_on_loopback_and_lists_workers_and_tasks(pool: Any) -> None:
    url = pool.dashboard.url
    assert urlsplit(url).hostname == "127.0.0.1"
    assert [f.result() for f in [pool.submit(operator.add, i, 1) for i in range(10)]] == list(range(1, 11))
    status, workers = request(url, "GET", "/api/workers")
    assert status == 200 and len(workers) == 2 and all(w["slots"] == 1 for w in workers)
    tasks = wait_for(lambda: [t for t in request(url, "GET", "/api/tasks?state=done&name=add")[1]])
    assert len(tasks) == 10 and tasks[0]["name"] == "_operator.add"
    status, detail = request(url, "GET", f"/api/tasks/{tasks[0]['id']}")
    assert status == 200 and detail["args"] == "(9, 1)" and detail["result"] == "10"
    overview = request(url, "GET", "/api/overview")[1]
    assert overview["connections"] == {"local clients": 1, "tcp workers": 2} and overview["done"] >= 10
    status, events = request(url, "GET", "/api/events?since=0")
    assert status == 200 and [e["kind"] for e in events[:2]] == ["worker-joined", "worker-joined"]
    assert request(url, "GET", f"/api/events?since={events[-1]['seq']}")[1] == []


def test_results_are_bounded_escaped_text(pool: Any) -> None:
    url = pool.dashboard.url
    future = pool.submit(shout, "x" * 5000)
    future.result()
    record = wait_for(lambda: request(url, "GET", "/api/tasks?state=done&name=shout&limit=1")[1])
    status, detail = request(url, "GET", f"/api/tasks/{record[0]['id']}")
    assert detail["result"].startswith("'<script>xxx") and len(detail["result"]) <= 200
    assert len(detail["args"]) <= 200


def test_failures_show_their_error(pool: Any) -> None:
    url = pool.dashboard.url
    with pytest.raises(ZeroDivisionError):
        pool.submit(operator.truediv, 1, 0).result()
    record = wait_for(lambda: request(url, "GET", "/api/tasks?state=failed&name=truediv")[1])
    detail = request(url, "GET", f"/api/tasks/{record[0]['id']}")[1]
    assert "ZeroDivisionError" in detail["error"]
    assert wait_for(lambda: [e for e in request(url, "GET", "/api/events")[1] if e["kind"] == "task-failed"])


def test_metrics_parse_with_prometheus_client(pool: Any) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    pool.submit(operator.add, 1, 2).result()
    wait_for(
        lambda: "minipool_task_runtime_seconds_count" in request(pool.dashboard.url, "GET", "/metrics")[1]
    )
    status, text = request(pool.dashboard.url, "GET", "/metrics")
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert families["minipool_workers"].samples[0].value == 2
    assert families["minipool_task_runtime_seconds"].type == "histogram"
    states = {s.labels["state"]: s.value for s in families["minipool_tasks"].samples}
    assert {s.labels["state"] for s in families["minipool_tasks_active"].samples} == {"queued", "running"}
    assert states["submitted"] >= states["done"] >= 1
    assert {"minipool_queue_depth", "minipool_payload_bytes", "minipool_topic_lag"} <= set(families)
    transports = {s.labels["transport"] for s in families["minipool_payload_bytes"].samples}
    assert transports == {"tcp", "local"}


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/tasks?limit=99999999999999", 400),
        ("/api/tasks?limit=-1", 400),
        ("/api/tasks?state=weird", 400),
        ("/api/tasks/nope", 400),
        ("/api/tasks/abc-123456", 404),
        ("/api/events?since=x", 400),
        ("/api/nothing", 404),
        ("/api/tasks?name=" + "n" * 3000, 414),
        ("/api/tasks?a&&&=", 400),
        ("/elsewhere", 404),
    ],
)
def test_bad_requests_get_a_json_4xx(pool: Any, path: str, status: int) -> None:
    got, body = request(pool.dashboard.url, "GET", path)
    assert got == status and "error" in body


def test_malformed_http_is_refused_and_the_coordinator_goes_on(pool: Any) -> None:
    parts = urlsplit(pool.dashboard.url)
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
            sock.sendall(raw)
            answer = sock.recv(65536)
            assert answer.split(b" ")[1][:1] in (b"4", b"5") and b'"error"' in answer
    status, _ = request(
        pool.dashboard.url, "POST", "/api/autoscale", control_headers(pool.dashboard.url, "x")
    )
    assert status == 401
    assert pool.submit(operator.mul, 6, 7).result() == 42


def test_control_needs_the_token_and_the_same_origin(pool: Any) -> None:
    url, token = pool.dashboard.url, pool.dashboard.server.token
    workers = request(url, "GET", "/api/workers")[1]
    path = f"/api/workers/{quote(workers[0]['id'], safe='')}/restart"
    assert request(url, "POST", path)[0] == 401  # no token, even on loopback
    assert request(url, "POST", path, {"Authorization": f"Bearer {token}"})[0] == 403  # no Origin
    evil = {"Authorization": f"Bearer {token}", "Origin": "http://evil.example"}
    assert request(url, "POST", path, evil)[0] == 403
    assert request(url, "GET", "/api/workers", {"Host": "evil.example"})[0] == 403  # DNS rebinding
    status, answer = request(url, "POST", "/api/tasks/abc-1/cancel", control_headers(url, token))
    assert status == 404 and "error" in answer


def test_cancel_a_queued_task_and_terminate_a_running_one() -> None:
    with Pool(1, authkey=KEY, dashboard="127.0.0.1:0") as pool:
        url, token = pool.dashboard.url, pool.dashboard.server.token
        pool.submit(operator.add, 1, 1).result()  # the worker is up
        running = pool.submit(slow, 30)
        # More than a worker's largest prefetch (state.MAX_PREFETCH), so that some stay queued.
        waiting = [pool.submit(operator.add, 2, i) for i in range(80)]
        wait_for(lambda: request(url, "GET", "/api/tasks?state=running")[1])
        queued_id = wait_for(lambda: request(url, "GET", "/api/tasks?state=queued")[1])[-1]["id"]
        assert (
            request(url, "POST", f"/api/tasks/{queued_id}/terminate", control_headers(url, token))[0] == 409
        )
        status, answer = request(url, "POST", f"/api/tasks/{queued_id}/cancel", control_headers(url, token))
        assert status == 200 and answer["was"] == "queued"
        running_id = request(url, "GET", "/api/tasks?state=running")[1][-1]["id"]
        status, answer = request(
            url, "POST", f"/api/tasks/{running_id}/terminate", control_headers(url, token)
        )
        assert status == 200 and answer["worker_restarted"] is True
        with pytest.raises(RemoteError, match="Revoked"):
            running.result(10)
        outcomes = []
        for future in waiting:  # a replacement worker runs the others
            try:
                outcomes.append(future.result(20))
            except RemoteError as exc:
                assert "cancelled from the dashboard" in str(exc)
                outcomes.append("cancelled")
        assert outcomes.count("cancelled") == 1 and len(outcomes) == 80
        wanted = {"task-cancelled", "task-terminated", "worker-lost"}
        wait_for(lambda: wanted <= {e["kind"] for e in request(url, "GET", "/api/events")[1]})


def test_the_journal_panel_reports_its_files(tmp_path: Any) -> None:
    with Pool(1, authkey=KEY, journal=str(tmp_path), dashboard="127.0.0.1:0") as pool:
        pool.submit(operator.add, 1, 1).result(20)
        wait_for(lambda: request(pool.dashboard.url, "GET", "/api/journal")[1]["bytes"])
        status, journal = request(pool.dashboard.url, "GET", "/api/journal")
        assert status == 200 and journal["directory"] == str(tmp_path) and journal["files"] >= 1
        assert "last_snapshot" in journal and journal["last_write"] is not None


def test_autoscale_bounds_and_worker_stop() -> None:
    with Pool(authkey=KEY, min_workers=1, max_workers=2, dashboard="127.0.0.1:0") as pool:
        url, token = pool.dashboard.url, pool.dashboard.server.token
        assert request(url, "GET", "/api/autoscale")[1] == {"min_workers": 1, "max_workers": 2}
        bad = request(url, "POST", "/api/autoscale", control_headers(url, token), b'{"min_workers": 5}')
        assert bad[0] == 400
        assert request(url, "POST", "/api/autoscale", control_headers(url, token), b"not json")[0] == 400
        ok = request(url, "POST", "/api/autoscale", control_headers(url, token), b'{"max_workers": 3}')
        assert ok == (200, {"min_workers": 1, "max_workers": 3})
        pool.submit(operator.add, 1, 1).result(20)
        worker = wait_for(lambda: request(url, "GET", "/api/workers")[1])[0]
        status, answer = request(
            url, "POST", f"/api/workers/{quote(worker['id'], safe='')}/stop", control_headers(url, token)
        )
        assert status == 200 and answer["pid"] == worker["pid"]


def test_a_dashboard_bound_elsewhere_needs_the_token_for_everything() -> None:
    with Coordinator(KEY) as coordinator:
        dashboard = Dashboard(coordinator)
        try:
            url = dashboard.serve(dashboard_token(KEY), "127.0.0.2:0")  # not a loopback *name*
            assert request(url, "GET", "/api/workers")[0] == 401
            assert request(url, "GET", "/")[0] == 401
            token = dashboard_token(KEY)
            assert request(url, "GET", f"/api/workers?token={token}") == (200, [])
            assert request(url, "GET", "/metrics", {"Authorization": f"Bearer {token}"})[0] == 200
            assert token not in KEY.decode() and len(token) == 32
        finally:
            dashboard.close()


def test_websocket_feed_refuses_a_foreign_origin_and_sends_updates(pool: Any) -> None:
    url = pool.dashboard.url
    ws_url = urlsplit(url.replace("http", "ws") + "/ws")
    with pytest.raises(Exception, match="403"):
        ws_connect(ws_url, Options(), origin="http://evil.example")
    conn = ws_connect(ws_url, Options(), origin=url)
    try:
        first = json.loads(conn.recv(timeout=5))
        assert first["type"] == "update" and len(first["workers"]) == 2
        pool.submit(operator.sub, 10, 1).result()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            update = json.loads(conn.recv(timeout=5))
            if any(t["name"] == "_operator.sub" for t in update.get("tasks", [])):
                break
        else:
            raise AssertionError("the new task did not reach the feed")
    finally:
        conn.close()


def test_topics_come_from_a_provider_and_show_their_lag(pool: Any) -> None:
    url = pool.dashboard.url
    coordinator = pool._coordinator
    assert request(url, "GET", "/api/topics") == (200, [])
    topic = {
        "name": "orders",
        "partitions": [{"partition": 0, "start": 0, "end": 12}],
        "groups": [{"name": "billing", "members": ["a"], "committed": {"0": 7}, "lag": {"0": 5}}],
    }
    real = coordinator.sections["topics"]
    coordinator.sections["topics"] = lambda: [topic]
    try:
        assert request(url, "GET", "/api/topics") == (200, [topic])
        text = request(url, "GET", "/metrics")[1]
        assert 'minipool_topic_lag{topic="orders",group="billing",partition="0"} 5.0' in text
    finally:
        coordinator.sections["topics"] = real


def test_the_coordinators_own_topics_and_their_groups_lag_are_shown(pool: Any) -> None:
    from minipool.topics import Consumer, Producer

    with Producer(pool=pool) as producer:
        for i in range(10):
            producer.send("dash-logs", b"line %d" % i)
        producer.flush()
    consumer = Consumer("dash-logs", pool=pool, group="dash-stats", auto_offset_reset="earliest")
    try:
        assert [record.value for record in itertools.islice(consumer, 4)] == [
            b"line %d" % i for i in range(4)
        ]
        consumer.commit()
        status, topics = request(pool.dashboard.url, "GET", "/api/topics")
        [topic] = [t for t in topics if t["name"] == "dash-logs"]
        assert status == 200 and topic["partitions"][0]["end"] == 10
        [group] = topic["groups"]
        assert group["name"] == "dash-stats" and group["lag"] == 6
        text = request(pool.dashboard.url, "GET", "/metrics")[1]
        assert 'minipool_topic_lag{topic="dash-logs",group="dash-stats",partition="0"} 6.0' in text
    finally:
        consumer.close()


def test_pipesets_are_registry_entries_of_their_kind(pool: Any) -> None:
    coordinator = pool._coordinator
    coordinator.register_entry(
        {
            "key": "ps-1",
            "services": ["pipe-set:words"],
            "meta": {"kind": "pipe-set", "instances": 3},
            "ttl": 30,
        }
    )
    coordinator.register_entry({"key": "other", "services": ["x"], "meta": {"kind": "rpc"}, "ttl": 30})
    entries = request(pool.dashboard.url, "GET", "/api/pipesets")[1]
    assert [e["key"] for e in entries] == ["ps-1"] and entries[0]["meta"]["instances"] == 3


def test_a_chaos_proxy_reports_its_counters_to_the_dashboard(pool: Any) -> None:
    import subprocess
    import sys

    target = urlsplit(pool.address)
    env = {**os.environ, "MINIPOOL_AUTHKEY": KEY if isinstance(KEY, str) else KEY.decode()}
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minipool",
            "chaos",
            "--listen",
            "127.0.0.1:0",
            "--target",
            f"{target.hostname}:{target.port}",
            "--delay",
            "0.001",
            "--report-to",
            pool.address,
            "--interval",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listening = proxy.stdout.readline()
        assert "minipool chaos listening on" in listening, proxy.stderr.read()
        address = listening.split(" on ", 1)[1].split(" ->", 1)[0]
        proxied = urlsplit(address)
        with socket.create_connection((proxied.hostname, proxied.port)):
            pass  # one connection through the proxy, which it counts

        def reported() -> Any:
            entries = request(pool.dashboard.url, "GET", "/api/chaos")[1]
            return entries if entries and entries[0]["meta"]["connections"] >= 1 else None

        [entry] = wait_for(reported, 20)
        assert entry["meta"]["target"] == f"{target.hostname}:{target.port}"
        assert entry["meta"]["faults"] == "delay=0.001" and entry["address"] == address
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(10)
    # It leaves the registry as it stops.
    assert request(pool.dashboard.url, "GET", "/api/chaos")[1] == []


def test_a_dashboard_in_another_process_uses_the_authenticated_connection() -> None:
    with Coordinator(KEY) as coordinator:
        url = coordinator.serve("tcp://127.0.0.1:0")
        backend = RemoteBackend(url, KEY)
        try:
            status, answer = backend.call("GET", "/api/workers")
            assert status == 404 and "--dashboard" in answer["error"]
            dashboard = Dashboard(coordinator)
            try:
                assert backend.call("GET", "/api/workers") == (200, [])
                assert backend.call("GET", "/api/tasks?limit=x")[0] == 400
                assert "# TYPE minipool_workers gauge" in backend.metrics()
            finally:
                dashboard.close()
        finally:
            backend.close()


def test_peek_reads_a_pickle_without_running_it(tmp_path: Any) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    data = pickle.dumps(Evil())
    text = describe_value(data, 2, "none")
    assert not marker.exists() and "system(" in text and "touch" in text
    assert peek(b"\x80\x05garbage") is ... and render(peek(os.urandom(300))) is not None
    assert describe_call(b"not a pickle", "none")[0] == "?"
    assert len(render(list(range(10_000)), 50)) <= 50


def test_history_is_bounded() -> None:
    history = History(tasks=5, events=3)
    with history.lock:
        for i in range(10):
            history.event("e", i=i)
    assert [e["i"] for e in history.events] == [7, 8, 9]
    assert history.events_since(8, 10)[0]["i"] == 8


def test_the_command_line_serves_and_watches(tmp_path: Any) -> None:
    import re
    import subprocess
    import sys

    env = {**os.environ, "MINIPOOL_AUTHKEY": KEY.decode()}
    token_file = tmp_path / "token"
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "minipool", "coordinator", "--bind", "tcp://127.0.0.1:0"]
        + ["--dashboard", "127.0.0.1:0", "--dashboard-token-file", str(token_file)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    watcher = None
    try:
        assert coordinator.stdout is not None
        listening = coordinator.stdout.readline()
        served = coordinator.stdout.readline()
        bind = re.search(r"tcp://\S+", listening).group(0)  # type: ignore[union-attr]
        page = re.search(r"http://\S+/", served).group(0)  # type: ignore[union-attr]
        assert f"token in {token_file}" in served and "?token=" not in served
        token = token_file.read_text().strip()
        assert token == dashboard_token(KEY) and token_file.stat().st_mode & 0o077 == 0
        assert request(page, "GET", "/api/workers") == (200, [])
        watcher = subprocess.Popen(
            [sys.executable, "-m", "minipool", "dashboard", bind],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert watcher.stdout is not None
        url = re.search(r"(http://\S+)/\?token=(\w+)", watcher.stdout.readline())
        assert url is not None and url.group(2) == token
        assert request(url.group(1), "GET", "/api/workers") == (200, [])
        assert "minipool_workers 0" in request(url.group(1), "GET", "/metrics")[1]
    finally:
        for process in (watcher, coordinator):
            if process is not None:
                process.terminate()
                process.wait(10)
                assert process.stdout is not None
                process.stdout.close()
