"""Accepting connections: the one loop behind every server in minipool.

Technique: *a thread per connection*. The coordinator, the rpc daemon, the ``http://``
listener's opener, the chaos proxy and the benchmark's echo servers all accept a connection,
decide whether to take it, and hand it to a thread of its own, where plain blocking reads and
writes serve it (the GIL is released while a thread waits on its socket, so the threads cost
memory, not CPU). This module is that loop, written once; what differs between the servers is
passed in: what taking a connection means (a limit on connections, a proxy told to refuse, the
admission of peers that have not yet proved their key) and what becomes of a connection when no
thread can be started (the interpreter is exiting, or the process is out of threads).

An ``accept`` that fails for a reason other than the listener closing (out of descriptors,
say) is logged and retried after a pause: a server never spins, and never stops serving
because of one bad moment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import ConnectionClosed

__all__ = ["serve_each", "ACCEPT_RETRY"]

log = logging.getLogger("minipool.transports")

ACCEPT_RETRY = 0.1  # seconds to wait after an accept that failed (out of descriptors, say)

C = TypeVar("C")
H = TypeVar("H")


def serve_each(
    accept: Callable[[], C],
    admit: Callable[[C], H | None],
    handle: Callable[[H], object],
    *,
    stopping: Callable[[], bool],
    thread_name: Callable[[H], str],
    unserved: Callable[[H, RuntimeError], object] | None = None,
) -> None:
    """Accept connections until ``stopping()`` (or the listener closes), each served by
    ``handle`` on a thread of its own.

    Args:
        accept: waits for the next connection; raises ConnectionClosed (or, once ``stopping()``
            is true, OSError) when the listener is closed.
        admit: takes a new connection and returns what ``handle`` serves (the connection
            itself, or something wrapping it), or None if it refused it (and closed it).
        handle: serves one connection, on a thread of its own.
        stopping: true once the server is closing.
        thread_name: names the thread serving a connection (``ps``, ``py-spy``, tracebacks).
        unserved: what to do with a connection when no thread can be started; by default it
            is served on this thread, which exists already.
    """
    while not stopping():
        try:
            conn = accept()
        except ConnectionClosed:
            return
        except OSError as exc:
            if stopping():
                return
            log.warning("accept failed: %s", exc)
            time.sleep(ACCEPT_RETRY)
            continue
        taken = admit(conn)
        if taken is None:
            continue
        try:
            threading.Thread(target=handle, args=(taken,), daemon=True, name=thread_name(taken)).start()
        except RuntimeError as exc:
            if unserved is None:
                handle(taken)
            else:
                unserved(taken, exc)
