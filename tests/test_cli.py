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
    return subprocess.Popen([sys.executable, "-m", "minipool", *args], env=env(key),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


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
    out = subprocess.run([sys.executable, "-m", "minipool", "status", url, "--json"], env=env(),
                         capture_output=True, text=True, timeout=30, check=True)
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
    done = subprocess.run([sys.executable, "-c", client], env=env(), capture_output=True, text=True,
                          timeout=60)
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
    out = subprocess.run([sys.executable, "-m", "minipool", "status", url], env=env(),
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert "coordinator" in out and "workers" in out


def test_a_worker_with_the_wrong_key_exits_with_code_3(cluster):
    url, _ = cluster
    worker = minipool("worker", "--connect", url, key="wrong")
    assert worker.wait(30) == 3
    assert "authentication" in worker.stderr.read().lower()


def test_missing_key_is_a_clear_error():
    environment = {k: v for k, v in os.environ.items() if k != "MINIPOOL_AUTHKEY"}
    done = subprocess.run([sys.executable, "-m", "minipool", "status", "tcp://127.0.0.1:9"],
                          env=environment, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "MINIPOOL_AUTHKEY" in done.stderr


@pytest.mark.parametrize("command", [[], ["coordinator"], ["worker"], ["status"]])
def test_help(command):
    done = subprocess.run([sys.executable, "-m", "minipool", *command, "--help"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "usage" in done.stdout
