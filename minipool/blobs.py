"""The caches of functions shipped with tasks: pickled once on the client, loaded once on a worker.

Technique: *memoising serialization by identity*. A ``Pool.map`` over a million items sends the
same function in every chunk; pickling it (by value, for a script's function: its code, its
globals) each time would cost more than the call. The client keeps each function's pickled
bytes keyed by the function's identity (:class:`FunctionBlobs`), and a worker keeps the function
each distinct blob turned into (:class:`BoundedCache`), both bounded, so a long-lived pool that
sees many lambdas uses fixed memory.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["BoundedCache", "FunctionBlobs", "CACHE_MAX_BLOB"]


class BoundedCache(OrderedDict):
    """A small LRU map, thread-safe enough for get/put from several threads."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._lock = threading.Lock()

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            try:
                self.move_to_end(key)
                return self[key]
            except KeyError:
                pass
        value = make()
        with self._lock:
            self[key] = value
            if len(self) > self._size:
                self.popitem(last=False)
        return value


#: Pickled functions larger than this are not cached: what makes them big is data they carry.
CACHE_MAX_BLOB = 64 * 1024
#: What the client caches: functions and classes, whose meaning is their identity. A bound
#: method or a ``functools.partial`` is pickled each time: it carries an object whose state may
#: have changed since, and caching it would keep that object alive.
_CACHEABLE = (types.FunctionType, type)


class FunctionBlobs:
    """function -> its pickled bytes and the SUBMIT headers its tasks need (client side),
    holding the function only weakly.

    Keyed by ``id(function)`` beside a weak reference: a lookup is a dict probe and an identity
    check (no hashing of the callable, so an unhashable one is fine), and an entry whose
    function has died can never match a new object that reuses its id. Dead entries hold only
    bytes, and leave as the LRU bound pushes them out.
    """

    def __init__(self, size: int) -> None:
        self.entries: OrderedDict[int, tuple[weakref.ref, bytes, dict[str, Any] | None]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, fn: Any) -> tuple[bytes, dict[str, Any] | None] | None:
        entry = self.entries.get(id(fn))
        return (entry[1], entry[2]) if entry is not None and entry[0]() is fn else None

    def put(self, fn: Any, blob: bytes, needs: dict[str, Any] | None) -> None:
        if not isinstance(fn, _CACHEABLE) or len(blob) > CACHE_MAX_BLOB:
            return
        with self._lock:
            self.entries[id(fn)] = (weakref.ref(fn), blob, needs)
            self.entries.move_to_end(id(fn))
            if len(self.entries) > self._size:
                self.entries.popitem(last=False)
