"""Tour steps on failure: workers killed and frozen, the coordinator killed and restarted from
its journal, and a network that cuts and delays (seed 000 §2.1-2.3: fault recovery, stateful vs
stateless computing, backups).

Each step runs the same tasks undisturbed first, then with the fault, and counts what came
back: every result once and correct is the claim, and a task that ran twice (its worker died
after starting it) is shown, not hidden.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from .step import COLUMNS, Context, Outcome, timed

__all__ = ["recovery", "chaos", "record_then_sleep"]


def record_then_sleep(path: str, value: int, seconds: float) -> int:
    """Append ``value`` to a file (a trace that the task ran), then sleep."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    time.sleep(seconds)
    return value


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def _ran(path: str) -> list[str]:
    with open(path) as f:
        return f.read().split()


def _started(log: str, count: int) -> bool:
    return os.path.exists(log) and len(_ran(log)) >= count


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _worker_faults(ctx: Context, count: int, tmp: str) -> list[list[Any]]:
    """A worker SIGKILLed, then another SIGSTOPped, while the pool runs ``count`` tasks."""
    from ..pool import Pool

    rows = []
    with Pool(ctx.workers, heartbeat=0.2) as pool:
        pool.wait_for_workers()
        calm = os.path.join(tmp, "calm")
        results, seconds = timed(
            lambda: [
                f.result(60) for f in [pool.submit(record_then_sleep, calm, i, 0.02) for i in range(count)]
            ]
        )
        rows.append(
            [
                "undisturbed",
                ctx.workers,
                count,
                seconds,
                _yes(results == list(range(count))),
                len(_ran(calm)),
                0,
            ]
        )
        for fault in (signal.SIGKILL, signal.SIGSTOP):
            log = os.path.join(tmp, fault.name)
            before = pool.status()["requeued"]
            start = time.perf_counter()
            futures = [pool.submit(record_then_sleep, log, i, 0.02) for i in range(count)]
            _wait(functools.partial(_started, log, ctx.workers), 30, "the first tasks")
            victim = pool.status()["local_processes"][0]
            os.kill(victim, fault)
            try:
                results = [f.result(60) for f in futures]
            finally:
                if fault == signal.SIGSTOP:
                    os.kill(victim, signal.SIGKILL)  # a frozen process is ended, not left behind
            seconds = time.perf_counter() - start
            requeued = pool.status()["requeued"] - before
            ran = len(_ran(log))
            rows.append(
                [
                    f"a worker sent {fault.name} mid-run",
                    ctx.workers,
                    count,
                    seconds,
                    _yes(results == list(range(count))),
                    ran,
                    requeued,
                ]
            )
        status = pool.status()
    rows[-1].append(status["restarts"])
    return rows


def _coordinator_restart(count: int, seconds_each: float, tmp: str) -> list[Any]:
    """The coordinator SIGKILLed mid-run and started again from its journal."""
    from ..pool import Pool

    key = secrets.token_hex(16)
    url = f"tcp://127.0.0.1:{_free_port()}"
    journal = os.path.join(tmp, "journal")
    env = {**os.environ, "MINIPOOL_AUTHKEY": key, "PYTHONPATH": os.pathsep.join(sys.path)}

    def cli(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "minipool", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    beat = ("--heartbeat", "0.2")
    coordinator = cli("coordinator", "--bind", url, "--journal", journal, "--fsync", "always", *beat)
    processes = [coordinator]
    log = os.path.join(tmp, "restart")
    try:
        assert coordinator.stdout is not None
        while "listening" not in coordinator.stdout.readline():  # it says so once it is bound
            if coordinator.poll() is not None:
                raise RuntimeError("the coordinator exited at start-up")
        processes += [cli("worker", "--connect", url, *beat) for _ in range(2)]
        with Pool(address=url, authkey=key, heartbeat=0.2) as client:
            client.wait_for_workers(2)
            start = time.perf_counter()
            futures = [client.submit(record_then_sleep, log, i, seconds_each) for i in range(count)]
            _wait(functools.partial(_started, log, count // 4), 30, "a quarter of the tasks")
            coordinator.send_signal(signal.SIGKILL)
            coordinator.wait(10)
            done_before = sum(f.done() for f in futures)
            coordinator = cli("coordinator", "--bind", url, "--journal", journal, *beat)
            processes.append(coordinator)
            results = [f.result(60) for f in futures]
            seconds = time.perf_counter() - start
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in processes:
            proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
    return [
        "the coordinator sent SIGKILL, restarted",
        2,
        count,
        seconds,
        _yes(results == list(range(count))),
        len(_ran(log)),
        "",
        done_before,
    ]


def recovery(ctx: Context) -> Outcome:
    count = ctx.size(40, 120)
    with tempfile.TemporaryDirectory(prefix="minipool-tour-") as tmp:
        rows = _worker_faults(ctx, count, tmp)
        restarts = rows[-1].pop()
        # The kill lands once a quarter has started: shorter tasks on the quick run still leave
        # most of them unfinished, since a restart takes longer than the run had taken so far.
        journal_row = _coordinator_restart(count, ctx.size(20, 50) / 1000, tmp)
    done_before = journal_row.pop()
    rows.append(journal_row)
    all_right = all(row[4] == "yes" for row in rows)
    return Outcome(
        COLUMNS + ["every result once, correct", "tasks run", "requeued"],
        rows,
        "nothing lost: " + ("every result once and correct" if all_right else "A RESULT WAS WRONG"),
        "A killed worker's connection drops and a frozen one stops heartbeating (declared dead after "
        "three missed beats): either way its leased tasks run again elsewhere"
        + (f", so a few ran twice ('tasks run' above {count})" if any(r[5] > count for r in rows) else "")
        + " and each result was delivered once. The supervisor started "
        f"{restarts} replacement(s). The coordinator is the pool's state: journaled (a write-ahead log, "
        f"fsync always), it was SIGKILLed with {count - done_before} tasks unfinished, restarted from "
        "its journal, and the clients and workers reconnected and finished every task.",
        {str(row[0]): float(row[3]) for row in rows},
        "seconds for the same tasks",
        [f"the restarted coordinator's run: {done_before} of {count} results had arrived before the kill"],
        peer="undisturbed",
    )


def chaos(ctx: Context) -> Outcome:
    from ..chaos import ChaosProxy
    from ..cluster.coordinator import Coordinator
    from ..cluster.worker import Worker
    from ..pool import Pool

    count = ctx.size(40, 150)
    key = secrets.token_hex(16).encode()
    rows: list[list[Any]] = []
    counters: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory(prefix="minipool-tour-") as tmp,
        Coordinator(key, heartbeat=0.2, max_losses=100) as coord,
    ):
        url = coord.serve("tcp://127.0.0.1:0")
        with ChaosProxy(url.removeprefix("tcp://"), seed=3) as proxy:
            workers = [
                Worker(
                    proxy.url("tcp"),
                    key,
                    kind="thread",
                    slots=2,
                    name=f"w{i}",
                    heartbeat=0.2,
                    max_backoff=0.5,
                )
                for i in range(2)
            ]
            threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
            for t in threads:
                t.start()
            try:
                with Pool(address=url, authkey=key, heartbeat=0.2) as client:
                    client.wait_for_workers(2, timeout=15)
                    for what, faults, cutting in (
                        ("a clean link", {}, False),
                        ("5 ms delay each way", {"delay": 0.005}, False),
                        ("connections cut again and again", {}, True),
                    ):
                        proxy.set(**{"delay": 0.0, **faults})
                        log = os.path.join(tmp, what.split()[0] + str(len(rows)))
                        before = coord.status()
                        start = time.perf_counter()
                        futures = [client.submit(record_then_sleep, log, i, 0.02) for i in range(count)]
                        cuts = 0
                        deadline = time.monotonic() + 60
                        while not all(f.done() for f in futures) and time.monotonic() < deadline:
                            if cutting and coord.status()["running"] and cuts < 10:
                                cuts += proxy.cut_all()
                                time.sleep(0.2)
                            time.sleep(0.01)
                        results = [f.result(5) for f in futures]  # TimeoutError if one never came
                        seconds = time.perf_counter() - start
                        after = coord.status()
                        rows.append(
                            [
                                what,
                                2,
                                count,
                                seconds,
                                _yes(results == list(range(count))),
                                len(_ran(log)),
                                after["requeued"] - before["requeued"],
                            ]
                        )
                    counters = proxy.counters()
            finally:
                for w in workers:
                    w.stop()
                for t in threads:
                    t.join(5)
    clean = rows[0][3]
    all_right = all(row[4] == "yes" for row in rows)
    return Outcome(
        COLUMNS + ["every result once, correct", "tasks run", "requeued"],
        rows,
        f"{counters.get('cut', 0)} connections cut, "
        + ("nothing lost or doubled" if all_right else "A RESULT WAS WRONG"),
        f"The chaos proxy sits between the workers and the coordinator. A delay only slows the run "
        f"({rows[1][3] / clean:.1f}x the clean link's time); a cut connection loses the tasks in flight on "
        "it, which the coordinator leases again once the worker reconnects"
        + (
            f": some ran twice ('tasks run' above {count}), yet every result reached the caller once."
            if rows[2][5] > count
            else f" ({rows[2][6]} requeued, none had started, so none ran twice); every result reached "
            "the caller once."
        ),
        {str(row[0]): float(row[3]) for row in rows},
        "seconds for the same tasks",
        [f"proxy counters: {counters}"],
        peer="a clean link",
    )
