"""Shipping functions to other machines: by reference when the worker can import them, by value
when it cannot.

Technique: *code mobility*. ``pickle`` sends a function as a reference -- its module and name --
and the receiver imports it. That works for ``math.sqrt`` or a function in an installed package,
but not for what students actually write: a function in a script (module ``__main__``), a lambda,
or a function nested in another. A worker started from the command line on another machine has a
different ``__main__`` and cannot find them. Dask solves this with cloudpickle; minipool does it
with the standard library:

* a function is sent *by value* when its module is ``__main__``, its name cannot be looked up
  in its module (lambdas, nested functions), or its module is not importable;
* by value means: its code object (``marshal``), its name, defaults, closure cells, and *only*
  the globals its code mentions (found by walking ``co_names`` through nested code objects),
  which are themselves pickled by this same pickler, so a helper function it calls travels too;
* modules among those globals travel by name (``import numpy as np`` works on the worker);
* recursive and mutually recursive functions work because the function object is created first
  and its globals and closure are filled in afterwards (pickle's "state" step), which lets the
  pickle memo break the cycle.

Limits, said plainly: a code object (``marshal``) is valid only in the interpreter that made
it, so a by-value function needs the same implementation and bytecode version on both sides
(by-reference functions do not). Each by-value function therefore carries :data:`INTERPRETER`,
the tag of the interpreter that made it, and is rebuilt only where the tag matches: anywhere
else unpickling it raises :class:`~minipool.errors.IncompatibleInterpreter` before ``marshal``
sees a byte, because foreign bytecode does not fail cleanly -- it gives wrong answers,
``SystemError`` or a segfault. :func:`dumps_needing` tells the sender whether its bytes need
that tag, so the coordinator can route them to a worker that has it (see docs/pool.md).
Classes defined in ``__main__`` are not shipped by value (define them in an importable module).

Only ever call :func:`loads` on bytes from an authenticated peer: unpickling runs code.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import io
import marshal
import pickle
import sys
import types
from collections.abc import Iterator
from typing import Any

from .errors import IncompatibleInterpreter

__all__ = ["dumps", "dumps_needing", "loads", "ships_by_value", "INTERPRETER"]

PROTOCOL = pickle.HIGHEST_PROTOCOL

#: What a code object marshalled here needs to be loaded: the implementation, its version, and
#: the bytecode magic number (which changes whenever the bytecode does), e.g.
#: ``cpython-3.11-a70d0d0a``. Two interpreters load each other's code objects only if their
#: tags are equal.
INTERPRETER = (
    f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}-"
    f"{importlib.util.MAGIC_NUMBER.hex()}"
)


def ships_by_value(fn: types.FunctionType) -> bool:
    """Whether ``fn`` must travel as code because a worker could not import it by name."""
    module_name = getattr(fn, "__module__", None)
    if module_name in (None, "__main__", "__mp_main__"):
        return True
    module = sys.modules.get(module_name)
    if module is None:
        return True
    target: Any = module
    for part in fn.__qualname__.split("."):
        target = getattr(target, part, None)
        if target is None:
            return True
    return target is not fn


def _global_names(code: types.CodeType) -> Iterator[str]:
    """Every name the code (and code nested in it: lambdas, comprehensions) may look up globally."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)


def _make_function(
    interpreter: str, code_bytes: bytes, name: str, qualname: str, module: str | None, ncells: int
) -> types.FunctionType:
    if interpreter != INTERPRETER:
        raise IncompatibleInterpreter(
            f"{qualname}() was shipped by value from {interpreter} and cannot run on "
            f"{INTERPRETER}: its code object is valid only there; " + IncompatibleInterpreter.REMEDY
        )
    code = marshal.loads(code_bytes)
    namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": module or "__main__"}
    closure = tuple(types.CellType() for _ in range(ncells)) or None
    fn = types.FunctionType(code, namespace, name, None, closure)
    fn.__qualname__ = qualname
    fn.__module__ = module  # type: ignore[assignment]
    return fn


def _set_function_state(fn: types.FunctionType, state: tuple[Any, ...]) -> None:
    globals_, defaults, kwdefaults, cell_values, doc, fn_dict = state
    fn.__globals__.update(globals_)
    fn.__defaults__ = defaults
    fn.__kwdefaults__ = kwdefaults
    fn.__doc__ = doc
    fn.__dict__.update(fn_dict)
    for cell, value in zip(fn.__closure__ or (), cell_values, strict=True):
        if value is not _EMPTY_CELL:
            cell.cell_contents = value


class _EmptyCell:
    """Marks a closure cell that had no value yet (a variable assigned after the def)."""

    def __reduce__(self) -> str:
        return "_EMPTY_CELL"


_EMPTY_CELL = _EmptyCell()


def _import_module(name: str) -> types.ModuleType:
    return importlib.import_module(name)


class ShippingPickler(pickle.Pickler):
    """A pickler that sends unimportable functions by value and modules by name.

    ``by_value`` turns True once it has pickled a function by value.
    """

    by_value = False

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType) and ships_by_value(obj):
            self.by_value = True
            return self._reduce_function(obj)
        if isinstance(obj, types.ModuleType):
            return _import_module, (obj.__name__,)
        return NotImplemented

    @staticmethod
    def _reduce_function(fn: types.FunctionType) -> tuple[Any, ...]:
        code = fn.__code__
        fn_globals = fn.__globals__
        referenced = {
            name: fn_globals[name] for name in dict.fromkeys(_global_names(code)) if name in fn_globals
        }
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:
                cells.append(_EMPTY_CELL)
        args = (INTERPRETER, marshal.dumps(code), fn.__name__, fn.__qualname__, fn.__module__, len(cells))
        state = (referenced, fn.__defaults__, fn.__kwdefaults__, cells, fn.__doc__, dict(fn.__dict__))
        # The 6-tuple form: the function object exists (and is memoized) before its state is
        # pickled, so a function that refers to itself does not recurse forever.
        return _make_function, args, state, None, None, _set_function_state


def dumps(obj: Any, protocol: int = PROTOCOL) -> bytes:
    """Pickle ``obj``, sending functions that a worker could not import by value.

    Raises:
        pickle.PicklingError, TypeError, AttributeError: something in ``obj`` cannot travel
            (an open file, a lock, a class defined in ``__main__``...).
    """
    return dumps_needing(obj, protocol)[0]


def dumps_needing(obj: Any, protocol: int = PROTOCOL) -> tuple[bytes, str | None]:
    """:func:`dumps`, and the interpreter its bytes need: :data:`INTERPRETER` when they hold a
    function by value, None when any interpreter can load them."""
    buffer = io.BytesIO()
    pickler = ShippingPickler(buffer, protocol)
    pickler.dump(obj)
    return buffer.getvalue(), INTERPRETER if pickler.by_value else None


def loads(data: bytes | memoryview) -> Any:
    """Unpickle bytes made by :func:`dumps`. Only for bytes from an authenticated peer."""
    return pickle.loads(data)
