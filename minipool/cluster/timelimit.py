"""A time limit for a task running in a process's main thread, by SIGALRM.

Technique: *interrupting a computation with a signal*. Python runs signal handlers in the main
thread between two bytecodes, so a handler that raises puts the exception inside whatever the
task was doing: its ``finally`` blocks run, and the worker's slot is free again at once, with
no second process to kill. Only the main thread can be interrupted this way; a task on another
thread (a thread worker's, or a process worker's stand-in for a task waiting on its children)
runs without the alarm, and the coordinator fails it when its time is up instead.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from .. import task as tasklib

__all__ = ["execute_within"]


def execute_within(body: bytes, codec: str, timeout: float) -> Any:
    """Run a task body (:func:`minipool.task.execute`); past ``timeout`` seconds, raise
    TimeoutError inside it when it runs in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return tasklib.execute(body, codec)
    armed = [True]  # cleared the moment the task is over: a late alarm must not hit the worker

    def expire(signum: int, frame: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise TimeoutError(f"task ran longer than its timeout of {timeout}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return tasklib.execute(body, codec)
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
