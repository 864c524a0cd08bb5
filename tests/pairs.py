"""A connected pair over any transport, for tests that drive both ends themselves."""

from __future__ import annotations

import threading
from typing import Any

from minipool.transports import connect, listen


def connected(url: str, **options: Any) -> tuple[Any, Any, Any]:
    """``(listener, client, server)``: the server's half of the handshake runs in a thread while
    the client connects (ws:// and http:// need both at once)."""
    listener = listen(url, **options)
    accepted: list[Any] = []

    def accept() -> None:
        conn = listener.accept()
        conn.handshake(5)
        accepted.append(conn)

    thread = threading.Thread(target=accept)
    thread.start()
    client = connect(listener.url, **options)
    thread.join(10)
    return listener, client, accepted[0]


def poll_catches_it_half_arrived(
    send_rest: Any, receiver: Any, sender: Any, expected: bytes, delay: float = 0.2
) -> None:
    """``receiver.recv(timeout=0)`` while a message is half here: ``send_rest`` sends the rest
    ``delay`` s later. The poll must return the whole message, the connection stay open, and
    the next message (from ``sender``) still arrive."""
    later = threading.Timer(delay, send_rest)
    later.start()
    try:
        assert receiver.recv(timeout=0.0) == expected
    finally:
        later.join()
    assert not receiver.closed
    sender.send(b"after")
    assert receiver.recv(5) == b"after"
