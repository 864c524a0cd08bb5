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
    subprocess.Popen(["sh", "-c", f"sleep {seconds}; kill -CONT {os.getpid()}"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.kill(os.getpid(), signal.SIGSTOP)
    return value
