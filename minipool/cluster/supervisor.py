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

**The lifeline.** Each child gets one end of a socket pair (``--lifeline FD``); the supervisor
keeps the other. It carries two things an exit status cannot:

* *the parent's life*. The child's watchdog thread (:func:`watch_lifeline`) blocks reading its
  end; end-of-file means the supervisor's process is gone, however it died (SIGKILL included),
  and the child exits at once with :func:`os._exit`, even in the middle of a task: no one is left
  to receive its result. The thread does not need the task to yield, and it also polls
  :func:`os.getppid`, in case a process forked from the parent keeps the other end open;
* *the child's last word*. A worker refused by the coordinator (a wrong key) writes
  ``refused REASON`` on it before exiting (:func:`tell_supervisor`), and the supervisor reads it
  when it sees the exit: restarting such a worker cannot help. An exit status could not carry
  this, because a task may end its process with any status it likes (``os._exit(3)``); a task
  would have to write on an inherited descriptor it knows nothing about to fake it.

Children start in a session of their own, so a Ctrl-C typed at the parent (or a Jupyter
kernel interrupt, which signals the kernel's process group) reaches the parent, not the
workers running its tasks; the parent decides what happens to them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["Supervisor", "watch_lifeline", "tell_supervisor", "describe_exit"]

log = logging.getLogger("minipool.supervisor")

#: The status of a child that exits because its supervisor is gone (no one reads it: the
#: parent is dead; it tells a human reading a process accounting log what happened).
EXIT_ORPHANED = 70
REFUSED = "refused"


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

    def __init__(
        self,
        url: str,
        authkey: bytes,
        count: int,
        *,
        kind: str = "process",
        slots: int = 1,
        name: str | None = None,
        restart: bool = True,
        reconnect: bool = False,
        extra_args: list[str] | None = None,
    ) -> None:
        self.url = url
        self._key = authkey
        self.kind = kind
        self.slots = slots
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.restart = restart
        self.reconnect = reconnect
        self._extra = extra_args or []
        self._children: dict[int, subprocess.Popen] = {}  # index -> process
        self._lifelines: dict[int, socket.socket] = {}  # pid -> the supervisor's end
        self._exits: dict[int, int] = {}  # pid -> exit status, for the last 100 exits
        self.refusal: str | None = None  # why the coordinator refused a child, if it did
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
        cmd = [
            sys.executable,
            "-m",
            "minipool",
            "worker",
            "--connect",
            self.url,
            "--slots",
            str(self.slots),
            "--kind",
            self.kind,
            "--name",
            f"{self.name}/{index}",
        ]
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
        ours, theirs = socket.socketpair()  # both ends non-inheritable; the child gets its own
        try:
            proc = subprocess.Popen(
                self._command(index) + ["--lifeline", str(theirs.fileno())],
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._lifelines[proc.pid] = ours
        return proc

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._children.values()]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._children)

    @property
    def gave_up(self) -> bool:
        """Every child was refused by the coordinator: none is left, and none will be started."""
        with self._lock:
            return self.refusal is not None and not self._children

    def exit_status(self, pid: int, wait: float = 0.0) -> str | None:
        """How child ``pid`` ended ("was killed by SIGKILL"), waiting up to ``wait`` seconds for
        it to end; ``None`` if it is still running or is not one of ours."""
        with self._lock:
            status = self._exits.get(pid)
            procs = [p for p in self._children.values() if p.pid == pid]
        if status is None and procs:
            try:
                status = procs[0].wait(wait)
            except subprocess.TimeoutExpired:
                return None
        return None if status is None else describe_exit(status)

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
        with self._lock:
            self._last_word(proc)
        self._event("stopped", proc.pid)
        return True

    def _event(self, what: str, pid: int) -> None:
        self.events.append({"time": time.time(), "event": what, "pid": pid})
        del self.events[:-100]

    def _last_word(self, proc: subprocess.Popen) -> str:
        """What an exited child wrote on its lifeline (empty if nothing); closes our end."""
        sock = self._lifelines.pop(proc.pid, None)
        if sock is None:
            return ""
        self._exits[proc.pid] = proc.returncode
        while len(self._exits) > 100:
            del self._exits[next(iter(self._exits))]
        try:
            sock.setblocking(False)
            return sock.recv(4096).decode("utf-8", "replace").strip()
        except OSError:
            return ""
        finally:
            sock.close()

    def _watch(self) -> None:
        while not self._closing.wait(0.1):
            with self._lock:
                dead = [(i, p) for i, p in self._children.items() if p.poll() is not None]
                for index, proc in dead:
                    if self._closing.is_set():
                        return
                    word = self._last_word(proc)
                    if word.startswith(REFUSED):  # a wrong key: restarting cannot help
                        self.refusal = word[len(REFUSED) :].strip() or "no reason given"
                        log.error(
                            "worker %s was refused by the coordinator (%s); not restarting",
                            proc.pid,
                            self.refusal,
                        )
                        del self._children[index]
                        continue
                    log.warning(
                        "worker process %s %s%s",
                        proc.pid,
                        describe_exit(proc.returncode),
                        "; starting a replacement" if self.restart else "",
                    )
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
        with self._lock:
            for sock in self._lifelines.values():
                sock.close()
            self._lifelines.clear()


def describe_exit(status: int) -> str:
    """A child's exit status in words: ``exited with status 13``, ``was killed by SIGKILL``."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"


def watch_lifeline(fd: int) -> socket.socket:
    """In a child: exit the process as soon as the supervisor is gone (see the module's
    docstring); return the lifeline, for :func:`tell_supervisor`."""
    lifeline = socket.socket(fileno=fd)
    parent = os.getppid()

    def watch() -> None:
        lifeline.settimeout(1.0)
        while True:
            try:
                if not lifeline.recv(64):
                    break  # end of file: every copy of the supervisor's end is closed
            except TimeoutError:
                if os.getppid() != parent:  # re-parented: the supervisor died
                    break
            except OSError:
                break
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, daemon=True, name="minipool-lifeline").start()
    return lifeline


def tell_supervisor(lifeline: socket.socket, reason: str) -> None:
    """In a child: say, before exiting, that the coordinator refused this worker."""
    try:
        lifeline.sendall(f"{REFUSED} {reason}\n".encode())
    except OSError:
        pass  # the supervisor is gone: no one to tell


def _stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
