"""The ``concurrent.futures.Executor`` interface over any client of a coordinator.

Technique: *one interface, several ways in*. ``submit``, ``map``, ``map_unordered``,
``map_reduce``, Celery-style ``task``, ``result`` by task id, the registry's ``lookup`` and
``register``: none of them cares how the calls reach the coordinator. Each packs a call
(:mod:`minipool.task`) and hands the bytes to a :class:`~minipool.futuretable.Client`, which
returns the future. So the same methods serve :class:`minipool.Pool` (an embedded or remote
coordinator) and :func:`minipool.current_pool` (a task's own pool, on its worker's
connection), and what a pool *is* -- processes, a coordinator, a lifetime -- stays in
:mod:`minipool.pool`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import mapping
from . import task as tasklib
from .asyncresult import TaskFunction
from .futuretable import Client

__all__ = ["ClientExecutor", "refuse_after_exit"]

#: Set once the interpreter has begun to exit: no pool accepts a task after that.
_exiting = False


def refuse_after_exit() -> None:
    """The interpreter is exiting: every executor refuses new tasks from now on."""
    global _exiting
    _exiting = True


class ClientExecutor(concurrent.futures.Executor):
    """``concurrent.futures.Executor`` over a client; subclasses set these attributes up.

    Attributes:
        codec: compression for task and result bodies of 1 KiB or more.
    """

    _client: Client
    codec: str
    _init: bytes | None  # the pool's packed initializer, which travels in each task
    _init_needs: dict[str, Any] | None  # SUBMIT headers of a by-value initializer
    _shutdown: bool
    _feeds: mapping.Feeds
    _local_slots: int  # slots known without asking (an embedded pool's own workers), or 0

    #: How ``map_unordered`` blocks on its futures, if not on its own queue (see TaskPool).
    wait_any: Callable[[set[concurrent.futures.Future], float | None], Any] | None = None

    def future(self) -> concurrent.futures.Future:
        """A new future for an outcome made of this executor's futures (a Celery-style task's
        with its retries); inside a task, one whose waits give the task's slot back."""
        return concurrent.futures.Future()

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The coordinator's report: ``workers`` (a list), ``queued``, ``running``, ``done``, ..."""
        return self._client.status(timeout)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Schedule ``fn(*args, **kwargs)`` on a worker; return its future."""
        if self._shutdown or _exiting:
            self._check_open()
        try:
            body, codec, needs = tasklib.pack_call(fn, args, kwargs, self.codec, self._init)
        except Exception as exc:  # noqa: BLE001 - see _send
            return self._client.failed(exc)
        return self._client.submit(body, codec, needs or self._init_needs)

    def submit_with(
        self,
        fn: Callable[..., Any],
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        priority: int = 0,
        timeout: float | None = None,
    ) -> concurrent.futures.Future:
        """:meth:`submit` with task options: ``priority`` (higher runs first) and ``timeout``."""
        self._check_open()
        headers: dict[str, Any] = {}
        if priority:
            headers["priority"] = priority
        if timeout is not None:
            headers["timeout"] = timeout
        return self._send(
            tasklib.pack_call, fn, args, kwargs or {}, self.codec, self._init, headers=headers or None
        )

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`, lazy and bounded.

        Args:
            chunksize: items per task; ``None`` chooses automatically (see :mod:`minipool.mapping`).
            buffersize: chunks in flight at once (default 64); the input is read only this far
                ahead of the results, so an endless iterator is fine.
            timeout: seconds, from this call, after which waiting for a result raises
                ``TimeoutError``.
        """
        self._check_open()
        star = len(iterables) != 1
        lengths = [mapping.length_of(iterable) for iterable in iterables]
        known = [n for n in lengths if n is not None]
        length = min(known) if len(known) == len(lengths) else None  # zip stops at the shortest
        sizer = mapping.ChunkSizer(chunksize, length, self._slots())
        chunks = sizer.chunks(zip(*iterables, strict=False) if star else iter(iterables[0]))
        submit = lambda chunk: self._send(  # noqa: E731
            tasklib.pack_chunk, fn, chunk, self.codec, star=star, init=self._init
        )
        return mapping.ordered(submit, chunks, sizer, mapping.window(buffersize), timeout, self._feeds)

    def map_unordered(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = 1,
        buffersize: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Any]:
        """Like :meth:`map` with one iterable, yielding results as they complete (SCOOP's
        ``map_as_completed``; ``multiprocessing.Pool.imap_unordered``)."""
        self._check_open()
        sizer = mapping.ChunkSizer(chunksize, mapping.length_of(iterable), self._slots())
        chunks = sizer.chunks(iter(iterable))
        submit = lambda chunk: self._send(tasklib.pack_chunk, fn, chunk, self.codec, init=self._init)  # noqa: E731
        return mapping.unordered(
            submit, chunks, sizer, mapping.window(buffersize), timeout, self._feeds, self.wait_any
        )

    def map_reduce(
        self,
        map_fn: Callable[[Any], Any],
        reduce_fn: Callable[[Any, Any], Any],
        iterable: Iterable[Any],
        initializer: Any = tasklib.NO_INITIAL,
        chunksize: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Map in parallel and fold the results with ``reduce_fn`` (SCOOP's ``mapReduce``).

        Each worker folds its own chunk, and the caller folds the partial results in input
        order, so ``reduce_fn`` need only be associative (not commutative).

        Raises:
            TypeError: the iterable is empty and there is no ``initializer``.
        """
        self._check_open()
        sizer = mapping.ChunkSizer(chunksize, mapping.length_of(iterable), self._slots())
        chunks = sizer.chunks(iter(iterable))
        submit = lambda chunk: self._send(  # noqa: E731
            tasklib.pack_reduce, map_fn, reduce_fn, chunk, tasklib.NO_INITIAL, self.codec, self._init
        )
        partials = mapping.ordered(
            lambda c: mapping.as_listing(submit(c), self.future()),
            chunks,
            sizer,
            mapping.DEFAULT_WINDOW,
            timeout,
            self._feeds,
        )
        acc = initializer
        for partial in partials:
            acc = partial if acc is tasklib.NO_INITIAL else reduce_fn(acc, partial)
        if acc is tasklib.NO_INITIAL:
            raise TypeError("map_reduce() of an empty iterable with no initializer")
        return acc

    # -- Celery-style tasks and the coordinator's tables ---------------------------------------

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        retries: int = 0,
        retry_backoff: float = 0.0,
        timeout: float | None = None,
        priority: int = 0,
    ) -> Any:
        """Decorate a function as a task with ``.delay()`` and ``.apply_async()`` (Celery's
        ``@app.task``). Usable bare (``@pool.task``) or with options."""

        def wrap(f: Callable[..., Any]) -> TaskFunction:
            return TaskFunction(
                self, f, retries=retries, retry_backoff=retry_backoff, timeout=timeout, priority=priority
            )

        return wrap(fn) if fn is not None else wrap

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The outcome of the task ``task_id`` (a future's ``task_id``, an ``AsyncResult.id``),
        asked of the coordinator: it works from another client, and after a reconnect.

        Raises:
            LookupError: the coordinator does not know the task (never submitted, or forgotten).
            TimeoutError: not finished within ``timeout``.
        """
        return self._client.fetch(task_id, timeout)

    def lookup(self, service: str) -> list[dict[str, Any]]:
        """The live registry entries offering ``service`` (workers and registered services)."""
        return self._client.lookup(service)

    def register(
        self,
        key: str,
        *,
        address: str,
        services: list[str],
        ttl: float,
        slots: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Add or renew an entry in the coordinator's service registry; it expires after ``ttl``
        seconds unless registered again."""
        self._client.register(key, address=address, services=services, ttl=ttl, slots=slots, meta=meta)

    def deregister(self, key: str) -> None:
        """Remove an entry from the coordinator's service registry at once (a service that is
        stopping), instead of leaving it listed until its ``ttl`` runs out."""
        self._client.deregister(key)

    def _send(
        self,
        pack: Callable[..., tuple[bytes, str, dict[str, Any] | None]],
        *args: Any,
        headers: dict[str, Any] | None = None,
        **options: Any,
    ) -> concurrent.futures.Future:
        """Pack a task with ``pack(*args, **options)`` and send it.

        A call that cannot be pickled fails *its future* with the pickling error, which
        ``submit`` returns as usual: ``ProcessPoolExecutor`` does the same (it pickles in a
        feeder thread), and a ``map`` then raises it at that item, like any task's error.
        """
        try:
            body, codec, needs = pack(*args, **options)
        except Exception as exc:  # noqa: BLE001 - whatever pickling raised is the task's error
            return self._client.failed(exc)
        needs = needs or self._init_needs
        if needs:  # the interpreter a by-value function needs (see task.BY_VALUE)
            headers = {**needs, **headers} if headers else needs
        return self._client.submit(body, codec, headers)

    def slots(self) -> int:
        """How many tasks this pool's workers run at once, as far as it knows now (an embedded
        pool's own slots without asking; else the coordinator's count, at least 1)."""
        return self._slots()

    def _slots(self) -> int:
        return self._local_slots or self._client.slots()

    def _check_open(self) -> None:
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
