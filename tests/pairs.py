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
