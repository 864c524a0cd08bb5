"""Task functions for the end-to-end tests. Workers import this module by name (by reference),
as they would any module of a user's project."""

import os
import time


def square(x):
    return x * x


def add(a, b=0):
    return a + b


def identity(x):
    return x


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def fail(message="boom"):
    raise ValueError(message)


class Unpicklable(Exception):
    def __init__(self, a, b):  # two required args: unpickling calls cls(*args) with one
        super().__init__(f"{a}-{b}")


def fail_unpicklable():
    raise Unpicklable(1, 2)


def die():
    os._exit(13)


def pid():
    return os.getpid()


def record_then_sleep(path, value, seconds):
    """Append value to a file (a side effect that shows a task ran), then sleep."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    time.sleep(seconds)
    return value


def flaky(path, succeed_on):
    """Fail until the attempt number recorded in ``path`` reaches ``succeed_on``."""
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        attempts = len(f.read())
    if attempts < succeed_on:
        raise RuntimeError(f"attempt {attempts} fails")
    return attempts


def wait_for_path(path, timeout=30.0):
    """Block until ``path`` exists (a gate a test opens), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.path.exists(path)


def record(path, value):
    """Append value to a file: a side effect that shows the task ran."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


class Holder:
    """An object carrying a payload, whose bound methods are shipped with it."""

    def __init__(self, size):
        self.payload = bytearray(size)

    def size(self, extra=0):
        return len(self.payload) + extra


class Dummy:
    """A result that can be weakly referenced (to see when the caller's last reference goes)."""


def make_dummy(x):
    return Dummy()


def exit_with(code):
    """A task that ends with sys.exit(code): its exception, not its worker's end."""
    import sys

    sys.exit(code)


def die_with(code):
    os._exit(code)


class ExitsWhenPickled:
    def __reduce__(self):
        import sys

        sys.exit(4)


def returns_what_exits_when_pickled():
    return ExitsWhenPickled()


def record_start_then_sleep(path, seconds):
    """Append this process's pid to ``path`` (proof the task started, and where), then sleep."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return seconds


def kill_self(signum):
    os.kill(os.getpid(), signum)
    time.sleep(10)


INITIALIZED = None


def initialize(path, value):
    """A pool initializer: remember ``value`` and record which process ran it."""
    global INITIALIZED
    INITIALIZED = value
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")


def initialized(_=None):
    return INITIALIZED, os.getpid()


def python_after(seconds):
    """The worker's Python version, after a pause (so that a burst of these spreads over workers)."""
    import platform

    time.sleep(seconds)
    return platform.python_version()


def record_then_return_bytes(path, size):
    """Append a line to ``path`` (to count runs), then return ``size`` bytes."""
    with open(path, "a") as f:
        f.write("ran\n")
    return b"x" * size


def freeze_then(path, seconds, value):
    """Record a run in ``path``, then freeze this whole process (SIGSTOP: its heartbeats stop
    too) until a helper sends SIGCONT ``seconds`` later; then return ``value``."""
    import signal
    import subprocess

    with open(path, "a") as f:
        f.write("ran\n")
    subprocess.Popen(
        ["sh", "-c", f"sleep {seconds}; kill -CONT {os.getpid()}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.kill(os.getpid(), signal.SIGSTOP)
    return value
