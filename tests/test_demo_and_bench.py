"""The dispatch, balance, codecs, pipeline, streaming and rpc benchmarks run end to end (tiny
settings); the guided tour has tests/test_demo.py."""

import json
import subprocess
import sys

import pytest


def run(*args, timeout=120):
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_dispatch_quick_measures_every_peer(tmp_path):
    path = tmp_path / "dispatch.json"
    run("minipool.bench", "dispatch", "--quick", "--json", str(path))
    results = json.loads(path.read_text())["results"]
    rates = results["rates"]
    for name in (
        "minipool submit",
        "mp imap_unordered(chunksize=1)",
        "ppe submit",
        "minipool round trip",
        "mp apply",
        "minipool map",
        "mp map",
        "ppe map",
    ):
        assert rates[name] > 0
    assert set(results["cpu_per_task_us"]) == {"minipool", "mp"}  # this process's, per submitted task
    assert all(us > 0 for us in results["cpu_per_task_us"].values())
    path = results["path"]  # the coordinator's process without sockets, by phase
    assert set(path) == {"submit", "decode", "burst", "result", "total"} and path["total"] > 0
    assert set(results["journal"]) == {"none", "everysec", "always"}
    assert results["stream"]["items"] > 0
    assert {"submit with", "submit without", "round trip with", "round trip without"} == set(
        results["dashboard"]
    )
    nested = results["nested"]  # a submit from inside a task; ProcessPoolExecutor deadlocks
    assert nested["inside_rate"] > 0 and nested["fib_pool_s"] > 0 and nested["waiting_peak"] >= 2
    assert nested["ppe"]["outcome"].startswith("deadlocked") and nested["ppe"]["processes_left"] == 0


@pytest.mark.parametrize(("bench", "option"), [("dispatch", "--nested-submits"), ("rpc", "--rounds")])
def test_a_bench_refuses_a_count_below_one(bench, option):
    done = subprocess.run(
        [sys.executable, "-m", "minipool.bench", bench, option, "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and f"{option}: must be at least 1, not 0" in done.stderr


def test_bench_balance_small_runs_the_simulation_and_a_real_coordinator(tmp_path):
    path = tmp_path / "balance.json"
    run(
        "minipool.bench",
        "balance",
        "--tasks",
        "24",
        "--sets",
        "1",
        "--real-sets",
        "1",
        "--unit",
        "0.001",
        "--json",
        str(path),
    )
    results = json.loads(path.read_text())["results"]
    assert set(results["real"]) == {"least-loaded", "round-robin", "random", "latency"}
    assert all(r["makespan"] > 0 for r in results["real"].values())


def test_bench_codecs_small(tmp_path):
    path = tmp_path / "codecs.json"
    run(
        "minipool.bench",
        "codecs",
        "--size",
        "0.25",
        "--repeat",
        "1",
        "--codecs",
        "none,gzip,zstd",
        "--small-calls",
        "10",
        "--json",
        str(path),
    )
    assert json.loads(path.read_text())["results"]


def test_bench_pipeline_small(tmp_path):
    path = tmp_path / "pipeline.json"
    run(
        "minipool.bench",
        "pipeline",
        "--reports",
        "12",
        "--latency",
        "0.001",
        "--repeat",
        "1",
        "--channel-records",
        "2000",
        "--durable-records",
        "2000",
        "--stream-records",
        "0",
        "--kind-tasks",
        "20",
        "--json",
        str(path),
    )
    results = json.loads(path.read_text())["results"]
    assert results
    assert {(r["work"], r["stage"]) for r in results["stage_kinds"]} == {
        (work, stage)
        for work, stages in (
            ("CPU 1 ms x 200", ("thread, 1 worker", "thread, 2 workers", "process, 2 workers")),
            (
                "wait 20 ms x 20",
                ("thread, 1 worker", "thread, 32 workers", "async, 32 workers", "process, 2 workers"),
            ),
        )
        for stage in stages
    }
    assert all(r["seconds"] > 0 for r in results["stage_kinds"])


def test_bench_rpc_small_measures_every_implementation(tmp_path):
    path = tmp_path / "rpc.json"
    # Two turns each: xmlrpc's 1 MB echo takes ~70 ms, and a turn is at least three calls.
    out = run("minipool.bench", "rpc", "--budget", "0.05", "--rounds", "2", "--json", str(path))
    rows = json.loads(path.read_text())["results"]["rows"]
    assert {(r["call"], r["impl"]) for r in rows} == {
        (call, impl)
        for call in ("add(1)", "echo(1 MB)")
        for impl in ("minipool.rpc", "multiprocessing.managers", "xmlrpc")
    }
    for r in rows:
        assert r["rtt_us"] > 0 and r["rtt_vs_minipool"] > 0
    assert "Remote method calls over loopback" in out
    # The same megabyte as a pool task, beside ProcessPoolExecutor.
    tasks = json.loads(path.read_text())["results"]["tasks"]
    assert [(r["task"], r["impl"]) for r in tasks] == [
        ("bytes(1 MB)", "minipool.Pool"),
        ("bytes(1 MB)", "ProcessPoolExecutor"),
    ]
    assert all(r["rtt_us"] > 0 for r in tasks) and tasks[0]["rtt_vs_minipool"] == 1.0
    assert "A 1 MB pool task's round trip" in out


def test_bench_checksum_times_every_way_of_checking_and_the_parts(tmp_path):
    path = tmp_path / "checksum.json"
    out = run("minipool.bench", "checksum", "--budget", "0.2", "--size", "300000", "--json", str(path))
    results = json.loads(path.read_text())["results"]
    assert [r["mode"] for r in results["rows"]] == ["none", "whole", "overlapped receive", "overlapped both"]
    assert all(r["scheduled_us"] > 0 for r in results["rows"])
    assert {p["part"] for p in results["parts"]} >= {"zlib.crc32", "copy into fresh pages"}
    assert "checked four ways" in out


def test_bench_streaming_small_every_engine_gives_the_same_counts(tmp_path):
    path = tmp_path / "streaming.json"
    out = run("minipool.bench", "streaming", "--records", "5000", "--repeat", "1", "--json", str(path))
    results = json.loads(path.read_text())["results"]
    assert results["same_answer"] and all(results["same_answer"].values())
    assert {"floor", "minipool"} <= set(results["seconds"])
    assert "bytewax" in out  # measured, or the reason it could not be
