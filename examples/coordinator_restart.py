"""A coordinator killed with SIGKILL mid-run and restarted from its journal: nothing lost.

Seed 000 §2.2 asks stateful computing for "a backup strategy, or results may be lost", and seed
001 §2.6 builds it as a recovery log replayed on restart after a backup (Redis's AOF + RDB).
minipool's coordinator is the stateful part of a pool (its queue, its leases, its results);
with ``--journal DIR`` it writes every accepted task and every outcome to a write-ahead log
before acting on it, and replays the log when it starts again (docs/stateless-vs-stateful.md).

This script starts, as separate programs on 127.0.0.1:

    python -m minipool coordinator --bind tcp://127.0.0.1:0 --journal DIR --fsync always
    python -m minipool worker --connect URL          # twice

submits tasks from ``Pool(address=URL)``, SIGKILLs the coordinator (no goodbye, no flush) once
part of them are done, starts it again on the same address and journal, and waits for every
result. The restarted coordinator says how many unfinished tasks it restored; the workers and
the client reconnect by themselves. Each task also appends a line to a file of its own, so the
script can count how many times each one ran: a task that was running when the coordinator
died may run twice (at-least-once), but its client gets exactly one result.

    python examples/coordinator_restart.py [--tasks 60] [--kill-after 20]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from remote_cluster import ROOT, first_line, start, stop  # the same helpers start the programs

from minipool import Pool


def square_logged(n: int, folder: str, seconds: float) -> int:
    time.sleep(seconds)
    with open(os.path.join(folder, str(n)), "a") as f:  # one line per run of task n
        f.write(f"{os.getpid()}\n")
    return n * n


def start_coordinator(bind: str, journal: str, env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    """Start a coordinator; return it, its URL and its journal line."""
    proc = start(
        "coordinator", "--bind", bind, "--journal", journal, "--fsync", "always", "--heartbeat", "0.2",
        env=env, stdout=subprocess.PIPE,
    )  # fmt: skip
    journal_line, listening = first_line(proc).strip(), first_line(proc).strip()
    if "listening on" not in listening:
        raise RuntimeError(f"the coordinator did not start: {journal_line!r} {listening!r}")
    return proc, listening.split("listening on")[1].strip(), journal_line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--kill-after", type=int, default=20, help="results before the SIGKILL")
    parser.add_argument("--seconds", type=float, default=0.05, help="each task's duration")
    args = parser.parse_args()
    os.environ["MINIPOOL_AUTHKEY"] = secrets.token_hex(32)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }

    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="minipool-restart-") as tmp:
        journal, runs = os.path.join(tmp, "journal"), os.path.join(tmp, "runs")
        os.mkdir(runs)
        try:
            coordinator, url, line = start_coordinator("tcp://127.0.0.1:0", journal, env)
            processes.append(coordinator)
            print(f"coordinator (pid {coordinator.pid}) at {url}: {line}")
            processes += [start("worker", "--connect", url, "--heartbeat", "0.2", env=env) for _ in range(2)]
            with Pool(address=url, heartbeat=0.2) as pool:
                pool.wait_for_workers(2, timeout=30)
                futures = [pool.submit(square_logged, n, runs, args.seconds) for n in range(args.tasks)]
                deadline = time.monotonic() + 30
                while sum(f.done() for f in futures) < args.kill_after and time.monotonic() < deadline:
                    time.sleep(0.01)
                coordinator.send_signal(signal.SIGKILL)
                coordinator.wait(10)
                before = sum(f.done() for f in futures)
                print(f"SIGKILL with {before} of {args.tasks} results delivered, {args.tasks - before} not")

                processes.remove(coordinator)
                stop(coordinator)
                coordinator, url, line = start_coordinator(url, journal, env)
                processes.insert(0, coordinator)
                print(f"restarted (pid {coordinator.pid}) at {url}: {line}")
                start_s = time.perf_counter()
                results = [f.result(timeout=60) for f in futures]
                print(f"every future resolved {time.perf_counter() - start_s:.2f} s after the restart")
                status = pool.status()
        finally:
            codes = [stop(p) for p in reversed(processes)]  # workers first, coordinator last
        runs_per_task = [len(Path(runs, str(n)).read_text().split()) for n in range(args.tasks)]

    restored = int(line.split(":")[-1].split()[0])
    twice = sum(r > 1 for r in runs_per_task)
    print(
        f"journal restored {restored} unfinished tasks; the workers ran {sum(runs_per_task)} times for "
        f"{args.tasks} tasks ({twice} ran twice: they were running when the coordinator died)"
    )
    print(f"coordinator after the restart: done {status['done']}, duplicates dropped {status['duplicates']}")
    print(f"stopped {len(codes)} processes, exit codes {codes}")
    ok = results == [n * n for n in range(args.tasks)] and min(runs_per_task) >= 1 and restored > 0
    print(f"nothing lost: {len(results)} of {args.tasks} results, each right: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
