"""Reading a pickle without running it: a task's function name and arguments for people.

Technique: *a pickle is a program; read its opcodes, never execute them*. ``pickle.loads``
runs whatever the bytes say -- import a module, call any function -- so the coordinator never
unpickles a task (see :mod:`minipool.cluster.broker`), and the dashboard must not either. Yet
a person watching wants to see ``add(1, 2)``, not 60 opaque bytes. :mod:`pickletools` parses
the opcode stream without executing it; this module runs that stream on a toy stack machine
whose values are inert: numbers, strings, containers, and for anything a real unpickler would
import or call, a :class:`Global` (just its dotted name) or a :class:`Call` (a name and the
arguments it would have got). Nothing is imported, nothing is called.

Everything is bounded: at most :data:`MAX_OPS` opcodes are read (a truncated or hostile pickle
ends the reading, not the dashboard), and :func:`render` cuts the text at ``limit`` characters.
The page shows the result with ``textContent``, never as HTML, so a task's output cannot
inject markup either.
"""

from __future__ import annotations

import functools
import pickletools
from dataclasses import dataclass
from typing import Any

from ..codecs import get_codec
from ..errors import MinipoolError

__all__ = ["Global", "Call", "Pairs", "peek", "render", "describe_call", "describe_value"]

#: Opcodes read from one pickle before the reading stops.
MAX_OPS = 5000
#: Bytes of a (decompressed) body that are read at most.
MAX_BYTES = 64 * 1024
_MARK = object()
_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_CALLS = {"REDUCE", "NEWOBJ"}


@dataclass(frozen=True)
class Global:
    """What ``GLOBAL`` / ``STACK_GLOBAL`` would import: only its name."""

    name: str


@dataclass
class Call:
    """What ``REDUCE`` / ``NEWOBJ`` would call, with the arguments it would get."""

    func: Any
    args: Any


@dataclass
class Pairs:
    """A dictionary's items (their keys may be values no real dict would hash)."""

    items: list[tuple[Any, Any]]


class _Truncated(Exception):
    pass


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise _Truncated


def _step(name: str, arg: Any, stack: list[Any], memo: dict[Any, Any]) -> None:
    """Apply one opcode to the inert stack (``pickle``'s semantics, without side effects)."""
    if name in ("PROTO", "FRAME", "STOP", "PUT", "BINPUT", "LONG_BINPUT"):
        if name.endswith("PUT"):
            memo[arg] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo[arg])
    elif name == "MARK":
        stack.append(_MARK)
    elif name == "POP":
        stack.pop()
    elif name == "POP_MARK":
        _pop_mark(stack)
    elif name == "DUP":
        stack.append(stack[-1])
    elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
        stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
    elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE"):
        stack.append({"EMPTY_LIST": [], "EMPTY_DICT": Pairs([]), "EMPTY_SET": set(), "EMPTY_TUPLE": ()}[name])
    elif name in _TUPLES:
        n = _TUPLES[name]
        popped = tuple(stack[-n:])
        del stack[-n:]
        stack.append(popped)
    elif name in ("TUPLE", "LIST", "FROZENSET"):
        items = _pop_mark(stack)
        stack.append(tuple(items) if name == "TUPLE" else items)
    elif name == "DICT":
        items = _pop_mark(stack)
        stack.append(Pairs(list(zip(items[::2], items[1::2], strict=False))))
    elif name == "APPEND":
        value = stack.pop()
        stack[-1].append(value)
    elif name in ("APPENDS", "ADDITEMS"):
        items = _pop_mark(stack)
        target = stack[-1]
        target.extend(items) if isinstance(target, list) else target.update(map(repr, items))
    elif name == "SETITEM":
        value, key = stack.pop(), stack.pop()
        stack[-1].items.append((key, value))
    elif name == "SETITEMS":
        items = _pop_mark(stack)
        stack[-1].items.extend(zip(items[::2], items[1::2], strict=False))
    elif name == "GLOBAL":
        stack.append(Global(str(arg).replace(" ", ".")))
    elif name == "STACK_GLOBAL":
        qualname, module = stack.pop(), stack.pop()
        stack.append(Global(f"{module}.{qualname}"))
    elif name in _CALLS:
        args = stack.pop()
        stack.append(Call(stack.pop(), args))
    elif name == "NEWOBJ_EX":
        kwargs, args = stack.pop(), stack.pop()
        stack.append(Call(stack.pop(), (args, kwargs)))
    elif name == "BUILD":
        stack.pop()  # the state a real unpickler would set on the object: not shown
    elif not name.startswith(("INT", "BININT", "LONG", "FLOAT", "BINFLOAT")) and not (
        "STRING" in name or "UNICODE" in name or "BYTES" in name
    ):
        raise _Truncated  # an object, a buffer or an extension: stop reading here
    else:
        stack.append(arg)


def peek(data: bytes) -> Any:
    """The inert value a pickle describes; ``Ellipsis`` where the reading had to stop.

    Never raises on any input: a malformed or hostile pickle gives back what was read of it.
    """
    values = _read(data)
    if not values:
        return ...
    return values if isinstance(values, _Partial) and len(values) > 1 else values[0]


class _Partial(list):
    """What was on the stack when a truncated pickle ran out: shown as its items."""


def _read(data: bytes) -> list[Any]:
    stack: list[Any] = []
    memo: dict[Any, Any] = {}
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data[:MAX_BYTES])):
            if count >= MAX_OPS:
                break
            _step(op.name, arg, stack, memo)
            if op.name == "STOP":
                return stack[-1:]
    except (_Truncated, ValueError, KeyError, IndexError, AttributeError, TypeError):
        pass
    return _Partial(v for v in stack if v is not _MARK)


def render(value: Any, limit: int = 200) -> str:
    """A ``repr``-like text of an inert value, at most ``limit`` characters."""
    text = _render(value, limit + 1)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _render(value: Any, budget: int) -> str:
    if budget <= 0:
        return "…"
    if isinstance(value, Global):
        return value.name
    if isinstance(value, Call):
        args = value.args
        inner = _items(args, budget) if isinstance(args, tuple) else _render(args, budget)
        return f"{_render(value.func, budget)}({inner})"
    if isinstance(value, Pairs):
        parts, used = [], 0
        for key, item in value.items:
            part = f"{_render(key, budget - used)}: {_render(item, budget - used)}"
            parts.append(part)
            used += len(part) + 2
            if used >= budget:
                break
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, tuple):
        return "(" + _items(value, budget) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + _items(value, budget) + "]"
    if isinstance(value, set):
        return "{" + ", ".join(sorted(value)) + "}" if value else "set()"
    if value is ...:
        return "…"
    text = repr(value)
    return text if len(text) <= budget else text[:budget] + "…"


def _items(values: Any, budget: int) -> str:
    parts, used = [], 0
    for item in values:
        part = _render(item, budget - used)
        parts.append(part)
        used += len(part) + 2
        if used >= budget:
            break
    return ", ".join(parts)


def _plain(body: bytes, codec: str) -> bytes:
    """The body decompressed (bounded), or as it is when that fails."""
    if codec == "none":
        return body
    try:
        return get_codec(codec).decompress(body, MAX_BYTES)
    except (MinipoolError, ValueError, OSError, EOFError):
        return b""


@functools.lru_cache(maxsize=256)
def _function_name(blob: bytes) -> str:
    """The name of the function a task carries (its pickle, the same bytes for every task of
    that function: read once, not once per task shown)."""
    fn = peek(blob)
    return fn.name if isinstance(fn, Global) else render(fn, 60)


def describe_call(body: bytes, codec: str, limit: int = 200) -> tuple[str, str]:
    """``(function name, arguments text)`` of a task body made by ``task.pack_call``.

    A body of another shape (an rpc invocation, a chunk of a map) is described as a whole.
    """
    value = peek(_plain(body, codec))
    if isinstance(value, _Partial) and len(value) >= 2 and isinstance(value[1], bytes):
        value = (value[0], value[1], ...)  # a body cut short: its function is still there
    if isinstance(value, tuple) and len(value) >= 3 and isinstance(value[1], bytes):
        name = _function_name(value[1])
        call = value[2]
        if isinstance(call, tuple) and len(call) == 2:
            args, kwargs = call
            parts = [_render(a, limit) for a in (args if isinstance(args, tuple) else (args,))]
            if isinstance(kwargs, Pairs):
                parts += [f"{k}={_render(v, limit)}" for k, v in kwargs.items]
            text = "(" + ", ".join(parts) + ")"
            return name, text if len(text) <= limit else text[: limit - 1] + "…"
        return name, render(call, limit)
    return "?", render(value, limit)


def describe_value(body: bytes, fmt: int, codec: str, limit: int = 200) -> str:
    """A result's or failure's body as bounded text (JSON bodies as they are)."""
    if fmt == 1:  # Format.JSON: the coordinator's own failures
        text = bytes(body[:MAX_BYTES]).decode("utf-8", "replace")
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return render(peek(_plain(body, codec)), limit)
