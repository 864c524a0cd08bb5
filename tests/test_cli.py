"""The command line: a coordinator and workers as separate programs, a client in a third."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

KEY = "cli-test-key"


def env(key=KEY):
    return {**os.environ, "MINIPOOL_AUTHKEY": key}


def minipool(*args, key=KEY, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "minipool", *args],
        env=env(key),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.fixture
def cluster():
    coordinator = minipool("coordinator", "--bind", "tcp://127.0.0.1:0", "--heartbeat", "0.5")
    line = coordinator.stdout.readline()
    assert "listening on" in line, coordinator.stderr.read()
    url = line.split()[-1]
    workers = [minipool("worker", "--connect", url, "--name", f"cli-{i}") for i in range(2)]
    yield url, workers
    for proc in [*workers, coordinator]:
        proc.terminate()
    for proc in [*workers, coordinator]:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def status(url):
    out = subprocess.run(
        [sys.executable, "-m", "minipool", "status", url, "--json"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def test_cli_workers_serve_a_client_in_another_process(cluster):
    url, _ = cluster
    deadline = time.monotonic() + 30
    while len(status(url)["workers"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    client = textwrap.dedent(f"""
        import json, os
        from minipool import Pool
        OFFSET = 100
        def shifted(x):          # defined in __main__: must travel by value
            return x + OFFSET
        with Pool(address={url!r}) as pool:
            out = {{
                "map": list(pool.map(shifted, range(10))),
                "lambda": pool.submit(lambda s: s.upper(), "remote").result(30),
                "pids": sorted(set(pool.map(lambda _: os.getpid(), range(200), chunksize=1))),
                "reduce": pool.map_reduce(shifted, lambda a, b: a + b, range(10)),
            }}
        print(json.dumps(out))
    """)
    done = subprocess.run(
        [sys.executable, "-c", client], env=env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["map"] == list(range(100, 110))
    assert out["lambda"] == "REMOTE"
    assert out["reduce"] == sum(range(100, 110))
    assert len(out["pids"]) == 2  # both CLI workers took part
    report = status(url)
    assert sorted(w["name"] for w in report["workers"]) == ["cli-0", "cli-1"]
    assert report["done"] >= 10


def test_status_human_output(cluster):
    url, _ = cluster
    out = subprocess.run(
        [sys.executable, "-m", "minipool", "status", url],
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "coordinator" in out and "workers" in out


def test_a_worker_with_the_wrong_key_exits_with_code_3(cluster):
    url, _ = cluster
    worker = minipool("worker", "--connect", url, key="wrong")
    assert worker.wait(30) == 3
    assert "authentication" in worker.stderr.read().lower()


def test_missing_key_is_a_clear_error():
    environment = {k: v for k, v in os.environ.items() if k != "MINIPOOL_AUTHKEY"}
    done = subprocess.run(
        [sys.executable, "-m", "minipool", "status", "tcp://127.0.0.1:9"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "MINIPOOL_AUTHKEY" in done.stderr


@pytest.mark.parametrize("command", [[], ["coordinator"], ["worker"], ["status"]])
def test_help(command):
    done = subprocess.run(
        [sys.executable, "-m", "minipool", *command, "--help"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and "usage" in done.stdout


# -- failing cleanly -------------------------------------------------------------------------


def run_cli(*args, key=KEY, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "minipool", *args],
        env=env(key),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(done):
    """The single line a failed command printed, after checking it printed only that."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def coordinator_url():
    coordinator = minipool("coordinator", "--bind", "tcp://127.0.0.1:0", "--heartbeat", "0.5")
    line = coordinator.stdout.readline()
    assert "listening on" in line, coordinator.stderr.read()
    yield line.split()[-1]
    coordinator.terminate()
    try:
        coordinator.wait(10)
    except subprocess.TimeoutExpired:
        coordinator.kill()
        coordinator.wait()


@pytest.fixture
def web_server():
    """A plain HTTP server (what ``python -m http.server`` runs): not a coordinator."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [
        ["worker", "--connect", "foo://127.0.0.1:7878"],
        ["worker", "--connect", "foo://127.0.0.1:7878", "--slots", "2"],
        ["status", "foo://127.0.0.1:7878"],
        ["coordinator", "--bind", "foo://127.0.0.1:0"],
    ],
    ids=["worker", "worker-slots", "status", "coordinator"],
)
def test_an_unknown_scheme_is_one_line_at_once(command):
    done = run_cli(*command, timeout=20)
    assert done.returncode == 2
    assert "unknown scheme foo://" in one_line(done) and "tcp" in one_line(done)


@pytest.mark.parametrize("scheme", ["tcp", "http", "ws"])
def test_status_of_a_web_server_is_one_line_and_an_exit_code(web_server, scheme):
    started = time.monotonic()
    # A web server never answers tcp://'s handshake: --timeout 1 bounds that wait (default 5 s).
    done = run_cli("status", f"{scheme}://127.0.0.1:{web_server}", "--timeout", "1", timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    assert "no minipool coordinator answered" in one_line(done)
    assert time.monotonic() - started < 11


def test_status_of_a_closed_port_is_one_line_and_an_exit_code():
    done = run_cli("status", f"tcp://127.0.0.1:{free_port()}", timeout=30)
    assert done.returncode == 1 and "no minipool coordinator answered" in one_line(done)


def test_a_worker_that_may_not_reconnect_gives_up_in_one_line():
    done = run_cli("worker", "--connect", f"tcp://127.0.0.1:{free_port()}", "--no-reconnect", timeout=30)
    assert done.returncode == 1 and "cannot reach tcp://127.0.0.1:" in one_line(done)


def test_status_with_the_wrong_key_is_one_line_and_exit_code_3(coordinator_url):
    done = run_cli("status", coordinator_url, key="not-the-key", timeout=30)
    assert done.returncode == 3 and "authentication" in one_line(done).lower()


def test_a_port_in_use_is_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("coordinator", "--bind", f"tcp://127.0.0.1:{port}", timeout=30)
    assert done.returncode == 1 and f"cannot listen on tcp://127.0.0.1:{port}" in one_line(done)


def test_a_short_key_on_a_public_bind_is_warned():
    import socket

    # The port is taken on 127.0.0.1, so binding 0.0.0.0 fails: the warning comes first, and
    # no test ever listens where other machines could reach it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("coordinator", "--bind", f"tcp://0.0.0.0:{port}", key="short", timeout=30)
    warning, failure = done.stderr.strip().splitlines()
    assert "warning: the key is 5 bytes" in warning and "token_hex" in warning
    assert "cannot listen" in failure and done.returncode == 1


def test_tls_without_its_files_is_one_line():
    done = run_cli("coordinator", "--bind", "tls://127.0.0.1:0", timeout=30)
    assert done.returncode == 2 and "needs --certfile" in one_line(done)
    done = run_cli("status", "tls://127.0.0.1:7878", "--cafile", "/nonexistent/ca.pem", timeout=30)
    assert done.returncode == 2 and "cannot load the TLS files" in one_line(done)
    # without --cafile, a client checks the coordinator's certificate against the system's CAs
    done = run_cli("status", f"wss://127.0.0.1:{free_port()}", timeout=30)
    assert done.returncode == 1 and "no minipool coordinator answered" in one_line(done)


def test_a_bad_slot_count_is_a_usage_error():
    done = run_cli("worker", "--connect", "tcp://127.0.0.1:7878", "--slots", "0", timeout=30)
    assert done.returncode == 2 and "--slots: must be 1 or more" in done.stderr


def test_which_keys_and_urls_get_the_short_key_warning():
    from minipool.commandline import MIN_KEY_BYTES, short_key_warning

    short, long_enough = b"k" * (MIN_KEY_BYTES - 1), b"k" * MIN_KEY_BYTES
    for url in ["tcp://127.0.0.1:7878", "ws://localhost:80", "tcp://[::1]:7878", "tcp://127.0.0.2:1"]:
        assert short_key_warning(short, [url]) is None, url
    for url in ["tcp://0.0.0.0:7878", "tcp://10.0.0.5:7878", "https://pool.example.org:443"]:
        assert url in short_key_warning(short, ["tcp://127.0.0.1:1", url]), url
        assert short_key_warning(long_enough, [url]) is None


def test_a_worker_says_at_once_without_v_that_it_cannot_connect():
    import threading

    worker = minipool("worker", "--connect", f"tcp://127.0.0.1:{free_port()}")
    lines, first = [], threading.Event()

    def read():
        for line in worker.stderr:
            lines.append(line)
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first.wait(30), "no line about the failed connection"
        time.sleep(2.0)  # a few more attempts (0.1 s, 0.2 s, ... apart): no more lines
    finally:
        worker.terminate()
        worker.wait(10)
        reader.join(10)
    assert len(lines) == 1 and "cannot reach" in lines[0] and "retrying" in lines[0], lines


def test_retries_are_reported_at_a_bounded_rate(monkeypatch, caplog):
    import logging
    import threading

    from minipool.cluster import worker as workerlib

    monkeypatch.setattr(workerlib, "RETRY_REPORT", 0.3)
    caplog.set_level(logging.INFO, logger="minipool.worker")
    worker = workerlib.Worker(f"tcp://127.0.0.1:{free_port()}", b"k" * 32, kind="thread", max_backoff=0.01)
    started = time.monotonic()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while sum(r.levelname == "WARNING" for r in caplog.records) < 3:  # never silent
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(10)
    elapsed = time.monotonic() - started
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    attempts = sum(r.levelname == "INFO" for r in caplog.records) + len(warnings)
    assert caplog.records[0].levelname == "WARNING"  # the first failure is never hidden
    assert len(warnings) <= 2 + elapsed / 0.3, warnings  # then one per RETRY_REPORT ...
    assert attempts > 3 * len(warnings)  # ... however many attempts there were
    assert "retrying" in warnings[0] and "attempts in" in warnings[-1] and "still trying" in warnings[-1]


def test_version():
    import minipool

    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"minipool {minipool.__version__}"


@pytest.mark.parametrize("command", [[], ["coordinator"], ["worker"], ["status"], ["chaos"]])
def test_help_shows_defaults_exit_codes_and_no_markup(command):
    import re

    from minipool.commandline import EXIT_CODES

    text = run_cli(*command, "--help").stdout
    assert "``" not in text and not re.search(r":\w+:`", text), text
    assert "exit codes:" in text and all(f"  {code}  " in text for code in EXIT_CODES)
    words = " ".join(text.split())  # argparse wraps lines to the terminal's width
    if command == ["worker"]:
        assert "(default: 1.0)" in words and "(default: process)" in words
    if command == ["status"]:
        assert "(default: 5.0)" in words


def test_the_docs_list_the_exit_codes():
    import pathlib

    from minipool.commandline import EXIT_CODES

    page = (pathlib.Path(__file__).parent.parent / "docs" / "pool.md").read_text()
    section = page[page.index("### Exit codes") :]
    for code in EXIT_CODES:
        assert f"| {code} |" in section


# -- worker names ----------------------------------------------------------------------------


def test_two_worker_commands_on_one_host_are_told_apart(coordinator_url):
    import socket

    commands = [minipool("worker", "--connect", coordinator_url, "--slots", "2") for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while len(status(coordinator_url)["workers"]) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        workers = status(coordinator_url)["workers"]
        host = socket.gethostname()
        names = sorted(w["name"] for w in workers)
        assert names == sorted(f"{host}:{c.pid}/{i}" for c in commands for i in range(2))
        assert all(w["pid"] not in {c.pid for c in commands} for w in workers)  # children
        out = run_cli("status", coordinator_url).stdout
        for c in commands:
            assert f"  {host}:{c.pid}: 2 process(es), 2 slots" in out
            assert out.index(f"{host}:{c.pid}/0") < out.index(f"{host}:{c.pid}/1")
    finally:
        for c in commands:
            c.terminate()
        for c in commands:
            c.wait(15)


def test_status_does_not_count_itself_as_a_client(coordinator_url):
    assert status(coordinator_url)["clients"] == 0


def test_status_groups_workers_by_the_command_that_started_them():
    from minipool.__main__ import render_status

    def worker(name, pid, kind="process", slots=1):
        return {
            "name": name,
            "pid": pid,
            "kind": kind,
            "slots": slots,
            "inflight": 0,
            "done": 0,
            "python": "3.11.7",
        }

    report = {
        "urls": ["tcp://127.0.0.1:7878"],
        "uptime": 3,
        "clients": 1,
        "queued": 0,
        "running": 0,
        "done": 0,
        "failed": 0,
        "requeued": 0,
        "slots": 15,
        "workers": [
            worker("a:1/10", 12),
            worker("b:7", 7, "thread", 4),
            worker("a:1/2", 11),
            worker("a:1/0", 10),
        ],
    }
    lines = render_status(report).splitlines()
    assert lines[2] == "workers: 4 process(es) from 2 command(s), 15 slots"
    assert lines[3] == "  a:1: 3 process(es), 3 slots"
    assert [line.split()[0] for line in lines[4:]] == ["a:1/0", "a:1/2", "a:1/10", "b:7"]
    assert lines[4].startswith("    a:1/0") and lines[7].startswith("  b:7")


def test_the_chaos_help_command_lists_the_commands():
    from minipool.__main__ import chaos_command
    from minipool.chaos import ChaosProxy

    with ChaosProxy("127.0.0.1:9") as proxy:
        assert chaos_command(proxy, "help").startswith("commands: cut (every open connection)")
