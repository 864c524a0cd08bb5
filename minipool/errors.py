"""The failures a minipool caller can act on, one class each.

Technique: an exceptions module in the style of the ``websockets`` library. Every layer raises
from this one small tree, so a caller can catch ``MinipoolError`` for "anything minipool", or
a precise class for the one failure it knows how to handle (a wrong key, a lost worker, a
frame that broke the protocol). This module imports nothing from minipool, so every layer may
import it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

__all__ = [
    "MinipoolError",
    "ProtocolError",
    "FrameTooLarge",
    "DamagedMessage",
    "MessageTooLarge",
    "AuthenticationError",
    "ConnectionClosed",
    "CodecError",
    "DecompressionBomb",
    "MissingExtra",
    "TransportError",
    "WorkerLost",
    "IncompatibleInterpreter",
    "RemoteError",
    "BrokenPool",
    "TopicError",
]


class MinipoolError(Exception):
    """Base class of every error minipool raises on purpose."""


class ProtocolError(MinipoolError):
    """Bytes from a peer do not follow the protocol (bad magic, version, length, encoding)."""


class FrameTooLarge(ProtocolError):
    """A peer announced or sent a frame larger than the configured maximum."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class DamagedMessage(ProtocolError):
    """A message failed its CRC-32 check: bytes changed between sender and receiver. The
    connection it came on is dropped; nothing in the message is used."""


class MessageTooLarge(MinipoolError, ValueError):
    """A task's call or result is larger than the coordinator's ``max_message``. The task fails
    with this at once and is not retried: it would be just as large the next time."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} of {size:,} bytes exceeds max_message, the limit of {limit:,} "
            "bytes a message may have (raise it on the coordinator, its workers and"
            " clients with max_message=, or send less)"
        )
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple:
        return _too_large, (self.args[0], self.size, self.limit)


def _too_large(message: str, size: int, limit: int) -> MessageTooLarge:
    exc = MessageTooLarge.__new__(MessageTooLarge)
    MinipoolError.__init__(exc, message)
    exc.size, exc.limit = size, limit
    return exc


class AuthenticationError(MinipoolError):
    """The HMAC handshake failed: the peer does not hold the same key (or is not minipool)."""


class ConnectionClosed(MinipoolError, ConnectionError):
    """The connection was closed, by the peer or locally, while sending or receiving."""


class TransportError(MinipoolError):
    """A URL names no known transport, or a transport cannot be set up as asked."""


class CodecError(MinipoolError):
    """A codec is unknown, or its input is not valid compressed data."""


class DecompressionBomb(CodecError):
    """Decompressing would produce more bytes than the allowed maximum."""

    def __init__(self, codec: str, limit: int) -> None:
        super().__init__(f"{codec}: decompressed data exceeds the limit of {limit} bytes")
        self.codec = codec
        self.limit = limit


class MissingExtra(MinipoolError, ImportError):
    """An optional feature needs a package that is not installed.

    The message names the extra to install, e.g. ``pip install 'minipool[zmq]'``.
    """

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(f"{feature} needs the {package!r} package: pip install 'minipool[{extra}]'")
        self.feature = feature
        self.extra = extra
        self.package = package


class WorkerLost(MinipoolError):
    """A task's worker died or went silent too many times while running it."""


class IncompatibleInterpreter(MinipoolError):
    """A function shipped by value (its code object) cannot run on this interpreter.

    A code object is valid only in the implementation and bytecode version that compiled it, so
    minipool never loads one elsewhere: the task fails with this error instead.
    """

    #: What the user can do about it, said at the end of every such message.
    REMEDY = (
        "ship it by reference instead: put the function in a module that both the client "
        "and the workers can import (not the script you run, nor a lambda)"
    )


class RemoteError(MinipoolError):
    """A task raised an exception that could not travel back as its original type.

    ``remote_type`` names the original class and ``remote_traceback`` holds the worker's
    formatted traceback text.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback
        return text


_class_lock = threading.Lock()

if TYPE_CHECKING:  # what type checkers see; at run time _broken_pool_class() makes the class
    from concurrent.futures.process import BrokenProcessPool

    class BrokenPool(MinipoolError, BrokenProcessPool):
        initializer: str

        def __init__(self, message: str, initializer: str = "") -> None: ...


def _broken_pool_class() -> type:
    from concurrent.futures.process import BrokenProcessPool

    class BrokenPool(MinipoolError, BrokenProcessPool):
        """The pool's ``initializer`` failed on a worker: the pool is not usable any more.

        As with ``ProcessPoolExecutor``, every pending future fails with it and later
        ``submit()`` calls raise it; catch it as ``concurrent.futures.BrokenExecutor`` or
        ``concurrent.futures.process.BrokenProcessPool``. ``initializer`` identifies the
        initializer that failed (a digest of its pickled bytes), so a pool tells its own
        failure from the same error raised by a task of its own.
        """

        def __init__(self, message: str, initializer: str = "") -> None:
            super().__init__(message)
            self.initializer = initializer

        def __reduce__(self) -> tuple:
            return (type(self), (str(self), self.initializer))

    BrokenPool.__module__, BrokenPool.__qualname__ = __name__, "BrokenPool"  # pickled by name
    return BrokenPool


def __getattr__(name: str) -> type:
    # BrokenPool derives from concurrent.futures.process.BrokenProcessPool, whose module
    # imports multiprocessing (tens of milliseconds): paid by the first process that needs it,
    # not by every ``import minipool``.
    if name == "BrokenPool":
        with _class_lock:
            if "BrokenPool" not in globals():
                globals()["BrokenPool"] = _broken_pool_class()
        return globals()["BrokenPool"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TopicError(MinipoolError, ValueError):
    """A topic request the coordinator refused: a name that is not a name, an unknown topic or
    group, an offset beyond the end, a record too large. Only that request fails."""
