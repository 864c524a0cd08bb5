"""A cluster of separate programs: one coordinator, two workers, and a client (seed 000 §2.1's
compute pool; seed 002's Celery broker + workers, started by hand).

``Pool()`` hides its coordinator and workers inside one program. Across machines they are
programs of their own, and this script starts them the way you would on three hosts (here all on
127.0.0.1, as subprocesses):

    export MINIPOOL_AUTHKEY=...                                   # the shared secret
    python -m minipool coordinator --bind tcp://127.0.0.1:0      # port 0: the OS picks a free one
    python -m minipool worker --connect tcp://127.0.0.1:PORT     # twice
    python -m minipool status tcp://127.0.0.1:PORT

then connects with ``Pool(address=...)``, runs a function defined in this script and a lambda
(both travel to the workers by value: the workers never import this file), prints the
coordinator's status, and stops every process, also when something fails on the way.

    python examples/remote_cluster.py
"""

from __future__ import annotations

import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

from minipool import Pool

ROOT = Path(__file__).resolve().parents[1]


def collatz_steps(n: int) -> tuple[int, int]:
    """Steps for n to reach 1 in the Collatz sequence, and the pid of the worker that ran it."""
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps, os.getpid()


def start(*args: str, env: dict[str, str], stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "minipool", *args], env=env, stdout=stdout, text=True)


def first_line(proc: subprocess.Popen, timeout: float = 15.0) -> str:
    """The first line a process prints, without waiting forever if it never prints one."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"no output from {proc.args} in {timeout} s") from None


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM (the programs finish cleanly on it), then SIGKILL if it takes too long."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def main() -> int:
    # The key travels in the environment, never on a command line (ps shows those to all).
    os.environ["MINIPOOL_AUTHKEY"] = secrets.token_hex(32)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    processes: list[subprocess.Popen] = []
    try:
        coordinator = start("coordinator", "--bind", "tcp://127.0.0.1:0", env=env, stdout=subprocess.PIPE)
        processes.append(coordinator)
        line = first_line(coordinator)  # "minipool coordinator listening on tcp://127.0.0.1:PORT"
        if "listening on" not in line:
            raise RuntimeError(f"the coordinator did not start: {line!r}")
        url = line.split("listening on")[1].strip()
        print(f"coordinator (pid {coordinator.pid}) at {url}")
        for name in ("worker-a", "worker-b"):
            processes.append(start("worker", "--connect", url, "--name", name, env=env))
        print(f"workers started: pids {[p.pid for p in processes[1:]]}")

        with Pool(address=url) as pool:  # the key comes from MINIPOOL_AUTHKEY
            pool.wait_for_workers(2, timeout=30)
            start_s = time.perf_counter()
            results = list(pool.map(collatz_steps, range(1, 3001), chunksize=100))
            seconds = time.perf_counter() - start_s
            steps = [s for s, _ in results]
            pids = {pid for _, pid in results}
            longest = max(range(len(steps)), key=steps.__getitem__) + 1
            print(
                f"collatz_steps (defined in __main__) for 1..3000 in {seconds:.2f} s on "
                f"{len(pids)} worker processes: longest is n={longest}, {max(steps)} steps"
            )
            shout = pool.submit(lambda s: s.upper() + "!", "lambdas travel too").result(timeout=30)
            print(f"a lambda ran remotely: {shout}")

            status = pool.status()
            print(
                f"status: {len(status['workers'])} workers, {status['slots']} slots, "
                f"done {status['done']}, failed {status['failed']}, queued {status['queued']}"
            )
            for w in status["workers"]:
                print(f"  {w['id']:<24} done {w['done']:>3}  pid {w.get('pid', '?')}")

        cli = subprocess.run(
            [sys.executable, "-m", "minipool", "status", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        print("python -m minipool status:", cli.stdout.splitlines()[0] if cli.stdout else cli.stderr)

        expected = [collatz_steps(n)[0] for n in range(1, 3001)]
        ok = steps == expected and shout == "LAMBDAS TRAVEL TOO!" and cli.returncode == 0
    finally:
        # Workers first, so none is left trying to reconnect to a coordinator that is gone.
        codes = [stop(p) for p in reversed(processes)]
    print(f"stopped {len(codes)} processes, exit codes {codes}")
    if not ok:
        print("the cluster's results differ from a serial run!", file=sys.stderr)
        return 1
    print("matches a serial run: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
