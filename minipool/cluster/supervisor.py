"""Local worker processes: start them, watch them, replace the ones that die.

Technique: *fault recovery by replacement* (seed 000 §2.1: "when a node fails, detect it and
start a replacement"), as a process supervisor in the manner of Celery's prefork pool or
systemd. Each child is a real ``python -m minipool worker`` process with one slot, so a task that
crashes the interpreter (a segfault, ``os._exit``, the OOM killer) costs one process: the
coordinator requeues its task, and the supervisor starts a fresh process in its place.

Children inherit ``sys.path`` through ``PYTHONPATH``, so functions defined in importable modules
of the parent (a test suite, a project's package) travel by reference exactly as they do with
``multiprocessing``'s spawn start method. The key travels in the environment
(``MINIPOOL_AUTHKEY``), never on the command line where ``ps`` would show it.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["Supervisor"]

log = logging.getLogger("minipool.supervisor")


class Supervisor:
    """Keeps ``count`` local worker processes connected to ``url``.

    Args:
        url: the coordinator's URL.
        authkey: the shared key (ASCII bytes, passed through the environment).
        count: how many worker processes to run.
        kind, slots: each child's ``--kind`` and ``--slots``.
        name: the children are named ``NAME/0``, ``NAME/1``, ... (a replacement keeps the name of
            the child it replaces). The default, ``HOST:PID`` of this process, tells apart the
            children of two ``worker`` commands on one host, and groups them in ``status``.
        restart: start a replacement when a child exits unexpectedly.
        reconnect: children keep reconnecting to a lost coordinator (CLI); embedded pools say
            False so that children exit with their parent's coordinator.
    """

    def __init__(self, url: str, authkey: bytes, count: int, *, kind: str = "process", slots: int = 1,
                 name: str | None = None, restart: bool = True, reconnect: bool = False,
                 extra_args: list[str] | None = None) -> None:
        self.url = url
        self._key = authkey
        self.kind = kind
        self.slots = slots
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.restart = restart
        self.reconnect = reconnect
        self._extra = extra_args or []
        self._children: dict[int, subprocess.Popen] = {}  # index -> process
        self._next_index = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.restarts = 0
        self.events: list[dict[str, Any]] = []
        for _ in range(count):
            self.add()
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="minipool-supervisor")
        self._watcher.start()

    def _command(self, index: int) -> list[str]:
        cmd = [sys.executable, "-m", "minipool", "worker", "--connect", self.url,
               "--slots", str(self.slots), "--kind", self.kind, "--name", f"{self.name}/{index}"]
        if not self.reconnect:
            cmd.append("--no-reconnect")
        return cmd + self._extra

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MINIPOOL_AUTHKEY"] = self._key.decode("ascii")
        paths = [p for p in sys.path if p] + [os.getcwd()]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def _spawn(self, index: int) -> subprocess.Popen:
        return subprocess.Popen(self._command(index), env=self._environment(), stdin=subprocess.DEVNULL)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._children.values()]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._children)

    def add(self) -> int:
        """Start one more worker process; return its pid."""
        with self._lock:
            index = self._next_index
            self._next_index += 1
            proc = self._spawn(index)
            self._children[index] = proc
        self._event("started", proc.pid)
        return proc.pid

    def remove(self, pid: int | None = None) -> bool:
        """Stop one worker process (``pid``, or the newest); its tasks are requeued."""
        with self._lock:
            items = [(i, p) for i, p in self._children.items() if pid is None or p.pid == pid]
            if not items:
                return False
            index, proc = max(items, key=lambda item: item[0])
            del self._children[index]
        _stop(proc)
        self._event("stopped", proc.pid)
        return True

    def _event(self, what: str, pid: int) -> None:
        self.events.append({"time": time.time(), "event": what, "pid": pid})
        del self.events[:-100]

    def _watch(self) -> None:
        while not self._closing.wait(0.1):
            with self._lock:
                dead = [(i, p) for i, p in self._children.items() if p.poll() is not None]
                for index, proc in dead:
                    if self._closing.is_set():
                        return
                    if proc.returncode == 3:  # the worker's "wrong key": restarting cannot help
                        log.error("worker %s was refused by the coordinator; not restarting", proc.pid)
                        del self._children[index]
                        continue
                    log.warning("worker process %s exited with %s%s", proc.pid, proc.returncode,
                                "; starting a replacement" if self.restart else "")
                    if self.restart:
                        self._children[index] = self._spawn(index)
                        self.restarts += 1
                    else:
                        del self._children[index]
            for _, proc in dead:
                self._event("exited", proc.pid)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every child: SIGTERM, then SIGKILL for any still running after ``timeout``."""
        self._closing.set()
        with self._lock:
            children = list(self._children.values())
            self._children.clear()
        for proc in children:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in children:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
