"""The one accept loop every server shares: retry, refuse, stop, and serve without a thread."""

from __future__ import annotations

import threading

import pytest

from minipool.errors import ConnectionClosed
from minipool.transports import serving


def scripted(*events):
    """An accept that returns or raises each of ``events`` in turn, then reports closing."""
    queue = list(events)

    def accept():
        event = queue.pop(0) if queue else ConnectionClosed("closed")
        if isinstance(event, BaseException):
            raise event
        return event

    return accept


def test_a_failed_accept_is_retried_and_a_refused_connection_is_never_served(monkeypatch):
    monkeypatch.setattr(serving, "ACCEPT_RETRY", 0.0)
    served, done = [], threading.Event()

    def handle(conn):
        served.append(conn)
        if len(served) == 2:
            done.set()

    accept = scripted("a", OSError(24, "Too many open files"), "refused", "b")
    serving.serve_each(
        accept,
        lambda conn: None if conn == "refused" else conn,
        handle,
        stopping=lambda: False,
        thread_name=lambda conn: f"test {conn}",
    )
    assert done.wait(5)
    assert sorted(served) == ["a", "b"]


def test_an_accept_error_while_stopping_ends_the_loop():
    stopping = threading.Event()

    def accept():
        stopping.set()
        raise OSError(9, "Bad file descriptor")

    serving.serve_each(accept, lambda c: c, pytest.fail, stopping=stopping.is_set, thread_name=str)


def test_without_a_thread_a_connection_is_served_here_or_handed_to_unserved(monkeypatch):
    class NoThreads:
        def __init__(self, **kwargs):
            pass

        def start(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(serving.threading, "Thread", NoThreads)
    here = []
    serving.serve_each(scripted("a"), lambda c: c, here.append, stopping=lambda: False, thread_name=str)
    assert here == ["a"]
    refused = []
    serving.serve_each(
        scripted("b"),
        lambda c: c,
        pytest.fail,
        stopping=lambda: False,
        thread_name=str,
        unserved=lambda conn, exc: refused.append((conn, str(exc))),
    )
    assert refused == [("b", "can't create new thread at interpreter shutdown")]
