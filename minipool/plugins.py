"""Plug-in registries: implementations found by name, built in or added by other packages.

Technique: *a registry with lazy entries and entry points*. Codecs (``"gzip"``) and transports
(``"tcp"``) are both chosen by a name in a string, and both have implementations that must not
be imported until used (zstandard, pyzmq, the WebSocket code). So a name maps either to a
ready implementation or to a *factory* that builds it on first use; what a factory builds
replaces it, and a factory that raises (:class:`~minipool.errors.MissingExtra` when an
optional package is absent) leaves it in place, so installing the package later works. Other
packages add names through an entry-point group, read once, on the first name not found.
An unknown name raises the caller's error, listing the names that are known.

:mod:`minipool.codecs` and :mod:`minipool.transports.base` each keep one :class:`Plugins`.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import MissingExtra

__all__ = ["Plugins"]

T = TypeVar("T")


class Plugins(Generic[T]):
    """A table of names to implementations of one kind.

    Args:
        kind: what one entry is, for messages (``"codec"``).
        group: the entry-point group other packages register under.
        unknown: builds the exception for a name nobody registered, from the name and the
            comma-separated names that are known.
        adopt: called with the registry and each entry point of ``group``, once, to add what
            that entry point provides (``add`` or ``add_lazy``); it decides whether a
            built-in name may be shadowed and what to do with a broken plug-in.

    Attributes:
        ready: name -> implementation, for the names built already (or never lazy).
        lazy: name -> factory, for the names not built yet.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        unknown: Callable[[str, str], Exception],
        adopt: Callable[[Plugins[T], Any], None],
    ) -> None:
        self.kind, self.group = kind, group
        self._unknown, self._adopt = unknown, adopt
        self.ready: dict[str, T] = {}
        self.lazy: dict[str, Callable[[], T]] = {}
        self.entry_points_loaded = False
        # Reentrant: an entry point's ``adopt`` adds names while the table is being read.
        self._lock = threading.RLock()

    def __contains__(self, name: str) -> bool:
        return name in self.ready or name in self.lazy

    def add(self, name: str, value: T, *, replace: bool = True) -> None:
        """Make ``name`` mean ``value``.

        Raises:
            ValueError: ``name`` is known already (built or not) and ``replace`` is false.
        """
        with self._lock:
            self._check_new(name, replace)
            self.lazy.pop(name, None)
            self.ready[name] = value

    def add_lazy(self, name: str, factory: Callable[[], T], *, replace: bool = True) -> None:
        """Make ``name`` mean what ``factory()`` returns, built on the first :meth:`get`."""
        with self._lock:
            self._check_new(name, replace)
            self.ready.pop(name, None)
            self.lazy[name] = factory

    def _check_new(self, name: str, replace: bool) -> None:
        if not replace and name in self:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")

    def get(self, name: str) -> T:
        """What ``name`` means, built now if it was lazy.

        Raises:
            MissingExtra: its factory needs a package that is not installed (nothing is kept).
            Exception: ``unknown(name, known)`` when no one registered ``name``.
        """
        try:
            return self.ready[name]  # the hot path: one dict lookup
        except KeyError:
            return self._get_slow(name)

    def _get_slow(self, name: str) -> T:
        with self._lock:
            if name not in self:
                self._load_entry_points()
            if name in self.ready:
                return self.ready[name]
            factory = self.lazy.get(name)
            if factory is None:
                raise self._unknown(name, ", ".join(sorted({*self.ready, *self.lazy})))
            value = factory()  # may raise MissingExtra: the factory stays for another try
            self.lazy.pop(name, None)
            self.ready[name] = value
            return value

    def names(self) -> list[str]:
        """Every name known, including those whose optional package is missing."""
        with self._lock:
            self._load_entry_points()
            return sorted({*self.ready, *self.lazy})

    def usable(self) -> list[str]:
        """The names that work here: those whose factory needs no missing package."""
        with self._lock:
            self._load_entry_points()
            lazy = list(self.lazy)
            usable = set(self.ready)
        for name in lazy:
            try:
                self.get(name)
            except MissingExtra:
                continue
            usable.add(name)
        return sorted(usable)

    def copy(self) -> Plugins[T]:
        """A registry with the same entries, whose changes leave this one alone."""
        other: Plugins[T] = Plugins(self.kind, self.group, self._unknown, self._adopt)
        with self._lock:
            other.ready, other.lazy = dict(self.ready), dict(self.lazy)
            other.entry_points_loaded = self.entry_points_loaded
        return other

    def _load_entry_points(self) -> None:
        if self.entry_points_loaded:
            return
        self.entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=self.group):
            self._adopt(self, ep)
