"""What a remote call may reach, and a large call's bytes without a copy.

Technique: *exposure by declaration* and *zero-copy pickling*. Only a method marked with
:func:`expose` (or defined in a class so marked) can be called through a proxy, never a name
that starts with ``_``: a proxy must not reach ``__class__`` or ``__reduce__`` of the object
behind it, nor what a subclass adds or a base class such as ``dict`` brings. A call or result
that carries a large ``bytes`` object is pickled in parts (:func:`gathered`), the large object
written as itself, so it reaches the socket as it is: pickling 1 MB into one ``bytes`` costs
more than sending it.
"""

from __future__ import annotations

import pickle
import threading
import types
from collections.abc import Callable
from typing import Any

from ..cluster.session import shared_key
from ..task import PROTOCOL
from ..wire import VIEW_MIN

__all__ = ["carries_large", "expose", "gathered", "large", "remote_method", "required_key"]

_EXPOSED = "_minipool_exposed"


def expose(target: Any) -> Any:
    """Mark a class (all its public methods) or a single method as callable through a proxy."""
    setattr(target, _EXPOSED, True)
    return target


def remote_method(obj: Any, name: str) -> Callable[..., Any]:
    """The bound method ``name`` of ``obj`` if a proxy may call it.

    Callable: a function (or a static or class method) defined in a class of ``obj``'s MRO
    that is marked with :func:`expose` itself, or whose *defining* class is marked -- so an
    exposed class does not expose what a subclass adds or what it inherits (``dict.clear``),
    and nested classes, properties and other attributes are never reachable.

    Raises:
        AttributeError: private, missing, not a method, or not exposed.
    """
    if not name or name.startswith("_"):
        raise AttributeError(f"{name!r} is private: remote calls reach public methods only")
    for cls in type(obj).__mro__:
        if name in vars(cls):
            raw = vars(cls)[name]
            break
    else:
        raise AttributeError(f"{type(obj).__name__!r} object has no method {name!r}")
    function = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    if not isinstance(function, types.FunctionType):
        raise AttributeError(f"{type(obj).__name__}.{name} is not a method")
    if not (getattr(function, _EXPOSED, False) or vars(cls).get(_EXPOSED, False)):
        raise AttributeError(
            f"{type(obj).__name__}.{name} is not exposed (decorate it, or the "
            f"class that defines it, with minipool.rpc.expose)"
        )
    return getattr(obj, name)


_picklers = threading.local()


def large(value: Any) -> bool:
    """Whether ``value`` is a bytes object large enough to be worth :func:`gathered` (a
    check of the top level only: it costs the small calls next to nothing)."""
    return type(value) is bytes and len(value) >= VIEW_MIN


def carries_large(args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether a call has an argument that :func:`large` says is worth :func:`gathered`."""
    for arg in args:
        if type(arg) is bytes and len(arg) >= VIEW_MIN:
            return True
    return bool(kwargs) and any(map(large, kwargs.values()))


def gathered(value: Any) -> list[bytes] | None:
    """``value`` pickled as the parts the pickler writes, or None if the plain pickler cannot
    pickle it (the caller falls back to :mod:`minipool.task`'s, which ships what it must by
    value). A bytes object of 64 KiB or more is written as a part of its own -- the very
    object, not a copy -- so a large argument or result reaches the socket as it is: pickling
    1 MB into one ``bytes`` costs more than sending it. A mutable buffer (a ``bytearray``) is
    copied, so that another thread changing it cannot make the CRC and the bytes sent differ.
    One pickler per thread, reused."""
    state = getattr(_picklers, "state", None)
    _picklers.state = None  # taken while in use: a value whose pickling pickles gets its own
    if state is None:
        parts: list[bytes] = []

        def write(data: Any) -> None:
            parts.append(data if type(data) is bytes else bytes(data))

        state = (pickle.Pickler(types.SimpleNamespace(write=write), PROTOCOL), parts)
    pickler, written = state
    try:
        pickler.dump(value)
        return written[:]
    except BaseException:  # noqa: BLE001 -- whatever it was, the fallback pickles it again and decides
        return None
    finally:
        written.clear()
        pickler.clear_memo()
        _picklers.state = state


def required_key(authkey: bytes | str | None) -> bytes:
    key = shared_key(authkey)
    if not key:
        raise ValueError("an authkey is needed: pass authkey= or set MINIPOOL_AUTHKEY")
    return key
