"""What a task is on the wire: a call going out, an outcome coming back.

Technique: *task serialization*, the part of a task queue that Celery calls the message body.
A task body is a pickled ``(mode, function, data)`` triple:

* ``CALL``: ``data`` is ``(args, kwargs)``; the outcome is the return value;
* ``CHUNK``: ``data`` is a list of items; the outcome is ``list(map(function, items))``. This
  is how ``Pool.map`` amortizes one message over many items (``chunksize``);
* ``STARCHUNK``: ``data`` is a list of argument tuples (``map`` over several iterables);
* ``REDUCE``: ``data`` is ``(reduce_fn, items, initializer)``; the worker maps then folds its chunk
  and returns one partial value (SCOOP's ``mapReduce``, reduced where the data is).

A pool with an ``initializer`` adds a fourth item: the initializer and its arguments, pickled
once by :func:`pack_initializer`. Whichever worker runs the task runs that initializer first,
once per process (:func:`execute` remembers the ones it ran), so it reaches workers on other
machines and replacement workers with no message of its own. A pool without one pays nothing:
its bodies are the same triples as before.

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

import hashlib
import os
import pickle
import socket
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import errors, shipping
from .blobs import CACHE_MAX_BLOB, BoundedCache, FunctionBlobs
from .codecs import DEFAULT_MAX_SIZE, get_codec

__all__ = [
    "packs",
    "pack_call",
    "BY_VALUE",
    "pack_invocation",
    "unpack_invocation",
    "pack_chunk",
    "pack_reduce",
    "pack_initializer",
    "initializer_id",
    "current_initializer",
    "execute",
    "load_function",
    "pack_outcome",
    "unpack_outcome",
    "RemoteTraceback",
    "Interrupted",
    "COMPRESS_MIN",
]

CALL, CHUNK, REDUCE, STARCHUNK = 0, 1, 2, 3
PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Bodies smaller than this are never compressed: the codec's fixed cost would exceed the gain.
COMPRESS_MIN = 1024


_blobs = FunctionBlobs(512)
_blob_entries = _blobs.entries
_functions = BoundedCache(512)  # pickled bytes -> function (worker side)

#: The SUBMIT header of a task that holds a function by value: only a worker running this
#: interpreter may load it (the coordinator routes on it; by-reference tasks send no header).
BY_VALUE = {"interpreter": shipping.INTERPRETER}


def _shipped(value: Any) -> tuple[bytes, dict[str, Any] | None]:
    body, needs = shipping.dumps_needing(value)
    return body, None if needs is None else BY_VALUE


def _blob(fn: Callable[..., Any]) -> tuple[bytes, dict[str, Any] | None]:
    """The function's pickled bytes and the headers its tasks need, cached per function."""
    entry = _blobs.get(fn)  # the common case, a hit: no lock, no reordering
    if entry is None:
        entry = _shipped(fn)
        _blobs.put(fn, *entry)
    return entry


def _dumps(value: Any) -> bytes:
    return _pack(value)[0]


def _pack(
    value: Any, shipped: tuple[bytes, bytes | None] | None = None
) -> tuple[bytes, dict[str, Any] | None]:
    """Pickle ``value`` (the fast C pickler when it can) and say what its task needs.

    ``shipped``: for a task, the function already shipped by value inside it and its pool's
    initializer. The C pickler pickles a function of the script (``__main__``) by reference
    without complaint, and a worker, whose ``__main__`` is another program, could not load it;
    so a task whose arguments name ``__main__`` is pickled again, shipping its functions by
    value (as a lambda already is)."""
    try:
        body = pickle.dumps(value, PROTOCOL)
        if shipped is None or not _names_main(body, *shipped):
            return body, None
    except (pickle.PicklingError, AttributeError, TypeError):
        pass  # arguments that hold a lambda
    return _shipped(value)


_MAIN = b"__main__"


def _names_main(body: bytes, blob: bytes, init: bytes | None) -> bool:
    """Whether the arguments pickled in ``body`` -- after the function ``blob`` and before the
    pool's initializer ``init``, which name their module themselves -- name ``__main__``."""
    if _MAIN not in body:
        return False
    # Found by a short piece of each: a long needle costs the search more than the scan.
    start = body.find(blob[-_PIECE:]) + min(len(blob), _PIECE)
    end = body.rfind(init[:_PIECE]) if init else len(body)
    return body.find(_MAIN, start, end) >= 0


_PIECE = 24


def _compress(data: bytes, codec: str) -> tuple[bytes, str]:
    if codec == "none" or len(data) < COMPRESS_MIN:
        return data, "none"
    return get_codec(codec).compress(data), codec


def _packed(
    task: tuple[Any, ...], codec: str, needs: dict[str, Any] | None, shipped: tuple[bytes, bytes | None]
) -> tuple[bytes, str, dict[str, Any] | None]:
    body, data_needs = _pack(task, shipped)
    return (*_compress(body, codec), needs or data_needs)


def packs(fn: Callable[..., Any]) -> bool:
    """Whether :func:`pack_call` has packed ``fn`` before (so it packs again, from its cache)."""
    entry = _blob_entries.get(id(fn))
    return entry is not None and entry[0]() is fn


def pack_call(
    fn: Callable[..., Any], args: tuple, kwargs: dict, codec: str = "none", init: bytes | None = None
) -> tuple[bytes, str, dict[str, Any] | None]:
    """Serialize one call (``init``: the pool's :func:`pack_initializer`). Returns ``(body,
    codec actually used, SUBMIT headers)``: the headers are :data:`BY_VALUE` when the task
    holds a function by value, else None."""
    entry = _blob_entries.get(id(fn))  # Pool.submit's path: _blobs.get, inlined
    if entry is not None and entry[0]() is fn:
        blob, needs = entry[1], entry[2]
    else:
        blob, needs = _blob(fn)
    call: tuple = (CALL, blob, (args, kwargs)) if init is None else (CALL, blob, (args, kwargs), init)
    if codec == "none":
        try:
            body = pickle.dumps(call, PROTOCOL)
            if not _names_main(body, blob, init):
                return body, "none", needs
        except (pickle.PicklingError, AttributeError, TypeError):
            pass  # arguments that hold a lambda or a __main__ function
    return _packed(call, codec, needs, (blob, init))


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
    if not (
        isinstance(value, tuple)
        and len(value) == 4
        and isinstance(value[0], str)
        and isinstance(value[1], str)
        and isinstance(value[2], tuple)
        and isinstance(value[3], dict)
    ):
        raise errors.ProtocolError("a remote call's body must be (object, method, args, kwargs)")
    return value


def pack_chunk(
    fn: Callable[..., Any],
    items: Sequence[Any],
    codec: str = "none",
    *,
    star: bool = False,
    init: bytes | None = None,
) -> tuple[bytes, str, dict[str, Any] | None]:
    """Serialize a chunk of calls of one function (``Pool.map``): ``fn(item)`` for each item,
    or ``fn(*item)`` with ``star`` (several iterables zipped into argument tuples). Returns
    what :func:`pack_call` returns."""
    blob, needs = _blob(fn)
    return _packed(_with_init((STARCHUNK if star else CHUNK, blob, items), init), codec, needs, (blob, init))


def pack_reduce(
    map_fn: Callable[..., Any],
    reduce_fn: Callable[[Any, Any], Any],
    items: Iterable[Any],
    initializer: Any,
    codec: str = "none",
    init: bytes | None = None,
) -> tuple[bytes, str, dict[str, Any] | None]:
    """Serialize a map-then-fold over a chunk (``Pool.map_reduce``). Returns what
    :func:`pack_call` returns."""
    map_blob, map_needs = _blob(map_fn)
    reduce_blob, reduce_needs = _blob(reduce_fn)
    task = (REDUCE, map_blob, (reduce_blob, list(items), initializer))
    return _packed(_with_init(task, init), codec, map_needs or reduce_needs, (reduce_blob, init))


def _with_init(call: tuple, init: bytes | None) -> tuple:
    return call if init is None else (*call, init)


def pack_initializer(fn: Callable[..., Any], args: Iterable[Any] = ()) -> tuple[bytes, dict[str, Any] | None]:
    """A pool's initializer and its arguments, pickled once (functions by value where a worker
    could not import them, as for tasks); every task of the pool carries these bytes. Returns
    them and the SUBMIT headers they need (:data:`BY_VALUE` when shipped by value).

    A random token makes them the pool's own: a worker runs the initializer once per *pool*, so
    the same program run again (the same initializer, the same arguments) runs it again there,
    and one run's failure is not held against the next."""
    return _shipped((os.urandom(8), fn, tuple(args)))


def initializer_id(init: bytes) -> str:
    """A short name for a packed initializer: :class:`~minipool.errors.BrokenPool` carries it,
    so a pool knows the failure is its own initializer's."""
    return hashlib.blake2b(init, digest_size=8).hexdigest()


#: packed initializer (one per pool) -> None, or its failure. Never trimmed: forgetting a pool
#: would run its initializer twice in this process; an entry costs about its packed bytes.
_initialized: dict[bytes, BaseException | None] = {}
_initializing = threading.Lock()
#: The packed initializer of the task each thread is running: its children carry it too.
_running = threading.local()


def current_initializer() -> bytes | None:
    """The packed initializer of the pool whose task this thread is running, if it has one."""
    return getattr(_running, "init", None)


def _initialize(init: bytes) -> None:
    """Run a pool's initializer in this process before its first task here, once.

    Raises:
        BrokenPool: it failed, now or before; every task of that pool fails here the same way.
    """
    if init not in _initialized:  # the first task of this pool here; thread workers take turns
        with _initializing:
            if init not in _initialized:
                _initialized[init] = _run_initializer(init)
    failure = _initialized[init]
    if failure is not None:
        raise errors.BrokenPool(
            f"the pool's initializer failed in worker process {os.getpid()} on "
            f"{socket.gethostname()}: {type(failure).__name__}: {failure}; the pool is not usable "
            "any more",
            initializer_id(init),
        ) from failure


def _run_initializer(init: bytes) -> BaseException | None:
    try:
        _, fn, args = shipping.loads(init)
        fn(*args)
    except Interrupted:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: CPython's pool breaks on any
        return exc
    return None


def load_function(blob: bytes) -> Callable[..., Any]:
    """The function in ``blob`` (:func:`shipping.dumps` bytes), unpickled once per process:
    the worker side's one cache of shipped functions, shared by tasks and pipeline stages."""
    fn = _functions.get(blob)
    if fn is not None:
        return fn
    if len(blob) > CACHE_MAX_BLOB:  # a function carrying data: not kept alive after its task
        return shipping.loads(blob)
    return _functions.get_or_make(blob, lambda: shipping.loads(blob))


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
    call = pickle.loads(body)
    _running.init = call[3] if len(call) > 3 else None
    if len(call) > 3:  # the pool has an initializer
        _initialize(call[3])
        call = call[:3]
    mode, blob, data = call
    fn = load_function(blob)
    if mode == CALL:
        args, kwargs = data
        return fn(*args, **kwargs)
    if mode == CHUNK:
        return list(map(fn, data))
    if mode == STARCHUNK:
        return [fn(*args) for args in data]
    reduce_blob, items, initializer = data
    reduce_fn = load_function(reduce_blob)
    acc = initializer
    for item in items:
        value = fn(item)
        acc = value if acc is NO_INITIAL else reduce_fn(acc, value)
    return acc


def pack_outcome(ok: bool, value: Any, codec: str = "none") -> tuple[bool, bytes, str]:
    """Serialize a return value (``ok``) or an exception.

    Returns ``(ok, body, codec)``; ``ok`` turns False if the value itself cannot be pickled,
    whatever pickling raised (a ``__reduce__`` that calls ``sys.exit`` included).
    """
    if ok:
        try:
            body, used = _compress(_dumps(value), codec)
            return True, body, used
        except Interrupted:
            raise
        except BaseException as exc:  # noqa: BLE001 - any pickling failure becomes the task's error
            value = exc
    error = value
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    name = f"{type(error).__module__}.{type(error).__qualname__}"
    try:
        body = pickle.dumps((error, name, str(error), tb), PROTOCOL)
        pickle.loads(body)  # some exceptions pickle but do not unpickle (custom __init__)
    except Interrupted:
        raise
    except BaseException:  # noqa: BLE001
        body = pickle.dumps((None, name, str(error), tb), PROTOCOL)
    return False, body, "none"


class Interrupted(BaseException):
    """Raised inside a running task when its worker process is told to stop (SIGTERM, SIGINT,
    or its coordinator gone for good). Never a task's outcome: the task's ``finally`` blocks
    run, and the worker exits. A task's own ``SystemExit`` or ``KeyboardInterrupt``, by
    contrast, is that task's exception, as in ``ProcessPoolExecutor``."""


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` of a re-raised task exception: the worker's traceback text."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def failure_from_json(info: dict[str, Any]) -> BaseException:
    """Build the exception for a failure the coordinator reported itself (no pickle involved)."""
    known = {
        "WorkerLost": errors.WorkerLost,
        "TimeoutError": TimeoutError,
        "KeyError": LookupError,
        "IncompatibleInterpreter": errors.IncompatibleInterpreter,
    }
    cls = known.get(str(info.get("type")))
    message = str(info.get("message", ""))
    if cls is None:
        return errors.RemoteError(str(info.get("type")), message)
    return cls(message)


def unpack_outcome(
    ok: bool, body: bytes, codec: str = "none", max_size: int = DEFAULT_MAX_SIZE
) -> tuple[bool, Any]:
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
