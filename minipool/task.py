"""What a task is on the wire: a call going out, an outcome coming back.

Technique: *task serialization*, the part of a task queue that Celery calls the message body.
A task body is a pickled ``(mode, function, data)`` triple:

* ``CALL``: ``data`` is ``(args, kwargs)``; the outcome is the return value;
* ``CHUNK``: ``data`` is a list of items; the outcome is ``list(map(function, items))``. This
  is how ``Pool.map`` amortizes one message over many items (``chunksize``);
* ``STARCHUNK``: ``data`` is a list of argument tuples (``map`` over several iterables);
* ``REDUCE``: ``data`` is ``(reduce_fn, items, initializer)``; the worker maps then folds its chunk
  and returns one partial value (SCOOP's ``mapReduce``, reduced where the data is).

Why it is built this way: the function is pickled *once* per function object and the bytes are
cached on both ends, so a ``map`` over a million items pays for a by-value lambda's code once,
not a million times; the arguments go through the fast C pickler and fall back to the by-value
pickler of :mod:`minipool.shipping` only when they contain a function that needs it. A task that
holds a function by value is packed with the :data:`BY_VALUE` header, which the coordinator uses
to send it only to a worker whose interpreter can load that code. Outcomes
carry the exception and its formatted traceback; when the exception itself cannot be pickled the
caller gets a :class:`~minipool.errors.RemoteError` with the same text instead.

The coordinator never imports this module: it forwards task bodies as opaque bytes.
"""

from __future__ import annotations

import pickle
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import errors, shipping
from .codecs import DEFAULT_MAX_SIZE, get_codec

__all__ = ["pack_call", "BY_VALUE", "pack_invocation", "unpack_invocation", "pack_chunk", "pack_reduce", "execute",
           "pack_outcome", "unpack_outcome",
           "RemoteTraceback", "COMPRESS_MIN"]

CALL, CHUNK, REDUCE, STARCHUNK = 0, 1, 2, 3
PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Bodies smaller than this are never compressed: the codec's fixed cost would exceed the gain.
COMPRESS_MIN = 1024


class _BoundedCache(OrderedDict):
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


_blobs = _BoundedCache(512)  # function -> (its pickled bytes, its SUBMIT headers) (client side)
_functions = _BoundedCache(512)  # pickled bytes -> function (worker side)

#: The SUBMIT header of a task that holds a function by value: only a worker running this
#: interpreter may load it (the coordinator routes on it; by-reference tasks send no header).
BY_VALUE = {"interpreter": shipping.INTERPRETER}


def _shipped(value: Any) -> tuple[bytes, dict[str, Any] | None]:
    body, needs = shipping.dumps_needing(value)
    return body, None if needs is None else BY_VALUE


def _blob(fn: Callable[..., Any]) -> tuple[bytes, dict[str, Any] | None]:
    """The function's pickled bytes and the headers its tasks need, cached per function."""
    try:
        entry = _blobs.get(fn)  # the common case, a hit: no lock, no reordering
        return entry if entry is not None else _blobs.get_or_make(fn, lambda: _shipped(fn))
    except TypeError:  # an unhashable callable: pickle it every time
        return _shipped(fn)


def _dumps(value: Any) -> bytes:
    return _pack(value)[0]


def _pack(value: Any) -> tuple[bytes, dict[str, Any] | None]:
    """Pickle ``value`` (the fast C pickler when it can) and say what its task needs."""
    try:
        return pickle.dumps(value, PROTOCOL), None
    except (pickle.PicklingError, AttributeError, TypeError):
        return _shipped(value)  # arguments that hold a lambda or a __main__ function


def _compress(data: bytes, codec: str) -> tuple[bytes, str]:
    if codec == "none" or len(data) < COMPRESS_MIN:
        return data, "none"
    return get_codec(codec).compress(data), codec


def _packed(task: tuple[Any, ...], codec: str, needs: dict[str, Any] | None
            ) -> tuple[bytes, str, dict[str, Any] | None]:
    body, data_needs = _pack(task)
    return (*_compress(body, codec), needs or data_needs)


def pack_call(fn: Callable[..., Any], args: tuple, kwargs: dict, codec: str = "none"
              ) -> tuple[bytes, str, dict[str, Any] | None]:
    """Serialize one call. Returns ``(body, codec actually used, SUBMIT headers)``: the
    headers are :data:`BY_VALUE` when the task holds a function by value, else None."""
    try:  # Pool.submit's path: a known function, uncompressed, in as few calls as possible
        entry = _blobs.get(fn)
    except TypeError:
        entry = None
    blob, needs = entry or _blob(fn)
    call = (CALL, blob, (args, kwargs))
    if codec == "none":
        try:
            return pickle.dumps(call, PROTOCOL), "none", needs
        except (pickle.PicklingError, AttributeError, TypeError):
            pass  # arguments that hold a lambda or a __main__ function
    return _packed(call, codec, needs)


def pack_invocation(name: str, method: str, args: tuple, kwargs: dict) -> bytes:
    """Serialize a call to a remote object's method (:mod:`minipool.rpc`)."""
    return _dumps((name, method, args, kwargs))


def unpack_invocation(body: bytes) -> tuple[str, str, tuple, dict]:
    """The ``(object name, method, args, kwargs)`` of :func:`pack_invocation` (from an
    authenticated peer only).

    Raises:
        ProtocolError: the body is not such a quadruple.
    """
    value = pickle.loads(body)
    if not (isinstance(value, tuple) and len(value) == 4 and isinstance(value[0], str)
            and isinstance(value[1], str) and isinstance(value[2], tuple)
            and isinstance(value[3], dict)):
        raise errors.ProtocolError("a remote call's body must be (object, method, args, kwargs)")
    return value


def pack_chunk(fn: Callable[..., Any], items: Sequence[Any], codec: str = "none", *,
               star: bool = False) -> tuple[bytes, str, dict[str, Any] | None]:
    """Serialize a chunk of calls of one function (``Pool.map``): ``fn(item)`` for each item,
    or ``fn(*item)`` with ``star`` (several iterables zipped into argument tuples). Returns
    what :func:`pack_call` returns."""
    blob, needs = _blob(fn)
    return _packed((STARCHUNK if star else CHUNK, blob, items), codec, needs)


def pack_reduce(map_fn: Callable[..., Any], reduce_fn: Callable[[Any, Any], Any], items: Iterable[Any],
                initializer: Any, codec: str = "none") -> tuple[bytes, str, dict[str, Any] | None]:
    """Serialize a map-then-fold over a chunk (``Pool.map_reduce``). Returns what
    :func:`pack_call` returns."""
    map_blob, map_needs = _blob(map_fn)
    reduce_blob, reduce_needs = _blob(reduce_fn)
    return _packed((REDUCE, map_blob, (reduce_blob, list(items), initializer)), codec,
                   map_needs or reduce_needs)


def _function(blob: bytes) -> Callable[..., Any]:
    fn = _functions.get(blob)
    return fn if fn is not None else _functions.get_or_make(blob, lambda: shipping.loads(blob))


class _NoInitial:
    """``map_reduce`` was given no initializer. Pickles by name, so identity survives the trip."""

    def __reduce__(self) -> str:
        return "NO_INITIAL"

    def __repr__(self) -> str:
        return "NO_INITIAL"


NO_INITIAL = _NoInitial()


def execute(body: bytes, codec: str = "none", max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Run a task body and return its value (exceptions propagate to the caller)."""
    if codec != "none":
        body = get_codec(codec).decompress(body, max_size)
    mode, blob, data = pickle.loads(body)
    fn = _function(blob)
    if mode == CALL:
        args, kwargs = data
        return fn(*args, **kwargs)
    if mode == CHUNK:
        return list(map(fn, data))
    if mode == STARCHUNK:
        return [fn(*args) for args in data]
    reduce_blob, items, initializer = data
    reduce_fn = _function(reduce_blob)
    acc = initializer
    for item in items:
        value = fn(item)
        acc = value if acc is NO_INITIAL else reduce_fn(acc, value)
    return acc


def pack_outcome(ok: bool, value: Any, codec: str = "none") -> tuple[bool, bytes, str]:
    """Serialize a return value (``ok``) or an exception.

    Returns ``(ok, body, codec)``; ``ok`` turns False if the value itself cannot be pickled.
    """
    if ok:
        try:
            body, used = _compress(_dumps(value), codec)
            return True, body, used
        except Exception as exc:  # noqa: BLE001 - any pickling failure becomes the task's error
            value = exc
    exc = value
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        body = pickle.dumps((exc, name, str(exc), tb), PROTOCOL)
        pickle.loads(body)  # some exceptions pickle but do not unpickle (custom __init__)
    except Exception:  # noqa: BLE001
        body = pickle.dumps((None, name, str(exc), tb), PROTOCOL)
    return False, body, "none"


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` of a re-raised task exception: the worker's traceback text."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def failure_from_json(info: dict[str, Any]) -> BaseException:
    """Build the exception for a failure the coordinator reported itself (no pickle involved)."""
    known = {"WorkerLost": errors.WorkerLost, "TimeoutError": TimeoutError, "KeyError": LookupError,
             "IncompatibleInterpreter": errors.IncompatibleInterpreter}
    cls = known.get(str(info.get("type")))
    message = str(info.get("message", ""))
    if cls is None:
        return errors.RemoteError(str(info.get("type")), message)
    return cls(message)


def unpack_outcome(ok: bool, body: bytes, codec: str = "none",
                   max_size: int = DEFAULT_MAX_SIZE) -> tuple[bool, Any]:
    """Turn an outcome body back into ``(True, value)`` or ``(False, exception)``."""
    if codec != "none":
        body = get_codec(codec).decompress(body, max_size)
    if ok:
        return True, pickle.loads(body)
    exc, name, message, tb = pickle.loads(body)
    if exc is None:
        return False, errors.RemoteError(name, message, tb)
    exc.__cause__ = RemoteTraceback(tb)
    return False, exc
