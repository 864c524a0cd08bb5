"""minipool: a teaching toolkit for distributed computing, on the standard library.

``from minipool import Pool`` gives a :class:`concurrent.futures.Executor` whose workers are
processes on this machine or others; see the README and ``docs/`` for the guided tour.
"""

from typing import TYPE_CHECKING

from .errors import (
    AuthenticationError,
    CodecError,
    ConnectionClosed,
    MessageTooLarge,
    MinipoolError,
    ProtocolError,
    RemoteError,
    WorkerLost,
)

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ below imports them
    from .errors import BrokenPool
    from .nested import current_pool
    from .pool import Pool

__version__ = "0.1.0"

__all__ = [
    "Pool",
    "current_pool",
    "AuthenticationError",
    "BrokenPool",
    "CodecError",
    "ConnectionClosed",
    "MessageTooLarge",
    "MinipoolError",
    "ProtocolError",
    "RemoteError",
    "WorkerLost",
]


def __getattr__(name: str) -> object:
    # Pool is imported on first use so that `python -m minipool worker` starts quickly and a
    # plain `import minipool` does not pull in the whole cluster layer.
    if name == "Pool":
        from .pool import Pool

        return Pool
    if name == "current_pool":
        from .nested import current_pool

        return current_pool
    if name == "BrokenPool":  # lazy in errors too: it derives from a multiprocessing class
        from .errors import BrokenPool

        return BrokenPool
    raise AttributeError(f"module 'minipool' has no attribute {name!r}")
