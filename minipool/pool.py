"""``Pool``: the user's entry point, a :class:`concurrent.futures.Executor` over a coordinator.

Technique: *a distributed compute pool behind a familiar interface* (seed 000's compute pool,
SCOOP's futures, Celery's tasks). Anyone who knows ``ProcessPoolExecutor`` already knows
``Pool``: ``submit`` returns a future, ``map`` yields results in order, ``shutdown`` and ``with``
work as usual. Behind it are the coordinator and workers of :mod:`minipool.cluster`:

* ``Pool()`` is the embedded default: a coordinator in this process, listening on 127.0.0.1
  with a random key, and one worker *process* per core, started and replaced when they die by a
  :class:`~minipool.cluster.supervisor.Supervisor`;
* ``Pool(address="tcp://host:port", authkey=...)`` is a client of a coordinator running
  elsewhere (``python -m minipool coordinator``), with workers on any number of machines.

The path of one task: :meth:`Pool.submit` packs the call (:mod:`minipool.task`) and hands it to
the client (:mod:`minipool.client`), which sends a SUBMIT; the coordinator
(:mod:`minipool.cluster.coordinator`) queues it and leases it to a worker
(:mod:`minipool.cluster.worker`), which runs it and sends the RESULT back the same way, where it
resolves the future.

The executor's contract is kept where a task runs in another process (docs/pool.md, "Executor
semantics"): a future is RUNNING once a worker holds its task, and ``cancel()`` is the
coordinator's answer; ``shutdown(wait=False)`` hands the ending to a thread, so pending futures
still complete; and, as ``ProcessPoolExecutor`` does, a hook in ``threading``'s exit sequence
finishes every live pool's pending tasks before the interpreter goes.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import mapping
from . import task as tasklib
from .asyncresult import Schedule, TaskFunction
from .client import Client, LocalClient, RemoteClient
from .cluster.autoscale import Autoscaler
from .cluster.coordinator import Coordinator
from .cluster.elastic import Elastic
from .cluster.session import HEARTBEAT, authkey_from_env, shared_key
from .cluster.supervisor import Supervisor
from .codecs import get_codec
from .tls import client_context, server_context

__all__ = ["Pool", "authkey_from_env"]


#: Pools not yet collected, for the exit hook (weakly: a pool dropped by its owner may be collected).
_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
#: Set once the interpreter has begun to exit: no pool accepts a task after that.
_exiting = False


def _finish_at_exit() -> None:
    """Shut every live pool down, waiting for its pending tasks, before the interpreter exits.

    ``ProcessPoolExecutor`` does the same with ``threading._register_atexit``: such a hook runs
    when the main thread ends, *before* daemon threads are abandoned and ``atexit`` handlers run,
    so the client's reader (a daemon thread) is still there to receive the last results.
    """
    global _exiting
    _exiting = True
    for pool in list(_live_pools):
        pool.shutdown(wait=True)


threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]


class Pool(concurrent.futures.Executor):
    """A pool of workers, local or remote, with the ``concurrent.futures`` interface.

    Args:
        workers: local worker processes to start (embedded mode; default ``os.cpu_count()``).
        address: URL of a running coordinator; ``None`` starts an embedded one.
        authkey: the shared key (remote mode; defaults to ``MINIPOOL_AUTHKEY``).
        transport: URL scheme the embedded coordinator listens on (``tcp``, ``ws``, ...).
        codec: compression for task and result bodies of 1 KiB or more.
        kind: ``"process"`` (one process per worker) or ``"thread"`` (one process running
            ``workers`` threads: for I/O-bound tasks).
        max_losses: workers a task may lose (crash or hang) before it fails with ``WorkerLost``.
        heartbeat: seconds between heartbeats; a peer silent for three is declared dead.
        balance: how the coordinator picks a worker: ``least-loaded``, ``round-robin``,
            ``random`` or ``latency`` (weights from measured run times).
        min_workers, max_workers: autoscaling (embedded mode): start ``min_workers`` and add
            processes while tasks wait, up to ``max_workers``; idle ones are retired.
        autoscale: the autoscaler's timings: ``scale_up_after``, ``idle_timeout``, ``cooldown``.
        dashboard: ``"HOST:PORT"`` to serve the embedded coordinator's live dashboard there
            (``pool.dashboard.server.private_url`` is the page with its token); see
            docs/dashboard.md.
        journal, fsync: a directory for the embedded coordinator's write-ahead journal, and its
            fsync policy (``always``, ``everysec``, ``no``).
        certfile, keyfile, cafile: TLS for ``tls``, ``https`` and ``wss``: the embedded
            coordinator's certificate and key, and the CA that clients and workers trust.
        initializer, initargs: ``initializer(*initargs)`` runs in each worker process before
            the first task of this pool it runs there, as in ``ProcessPoolExecutor`` (remote and
            replacement workers too). If it raises, the pool is broken: its pending futures
            fail with :class:`~minipool.errors.BrokenPool` and ``submit`` raises it.
        transport_options: passed to the transport (``ssl_context=``, ``max_message=``, ...).

    Raises:
        AuthenticationError: the coordinator at ``address`` refused the key.
        OSError: the coordinator at ``address`` cannot be reached.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        authkey: bytes | str | None = None,
        transport: str = "tcp",
        codec: str = "none",
        kind: str = "process",
        max_losses: int = 3,
        heartbeat: float = HEARTBEAT,
        balance: str = "least-loaded",
        min_workers: int | None = None,
        max_workers: int | None = None,
        autoscale: dict[str, Any] | None = None,
        dashboard: str | None = None,
        journal: str | None = None,
        fsync: str = "everysec",
        certfile: str | None = None,
        keyfile: str | None = None,
        cafile: str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
        **transport_options: Any,
    ) -> None:
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        get_codec(codec)  # fail now, not at the first task, on an unknown codec or missing extra
        # The initializer travels inside every task of this pool, pickled once (see task.py).
        self._init: bytes | None = None
        self._init_needs: dict[str, Any] | None = None  # SUBMIT headers of a by-value initializer
        if initializer is not None:
            self._init, self._init_needs = tasklib.pack_initializer(initializer, initargs)
        if kind not in ("process", "thread"):
            raise ValueError(f"kind must be 'process' or 'thread', not {kind!r}")
        _check_counts(workers=workers, max_losses=max_losses, heartbeat=heartbeat)
        self.codec = codec
        self.kind = kind
        self._shutdown = False
        self._closed = threading.Event()  # set once shutdown has stopped everything
        self._feeds = mapping.Feeds()
        self._coordinator: Coordinator | None = None
        self._supervisor: Supervisor | None = None
        self._elastic: Elastic | None = None
        self.dashboard: Any = None  # a minipool.dashboard.Dashboard, with dashboard=
        self._schedules: list[Schedule] = []
        self._slots_cache: tuple[float, int] | None = None
        if address is None:
            key = shared_key(authkey, env=False) or secrets.token_hex(32).encode()
            elastic = min_workers is not None or max_workers is not None
            count = workers or os.cpu_count() or 1
            if elastic:
                low = min_workers if min_workers is not None else 1
                high = max_workers if max_workers is not None else max(count, low)
                autoscaler = Autoscaler(low, high, **(autoscale or {}))
                count = low
            if certfile:
                transport_options.setdefault("ssl_context", server_context(certfile, keyfile))
            self._coordinator = Coordinator(
                key,
                max_losses=max_losses,
                heartbeat=heartbeat,
                balance=balance,
                journal=journal,
                fsync=fsync,
                **transport_options,
            )
            self.address = self._coordinator.serve(f"{transport}://127.0.0.1:0")
            beat = ["--heartbeat", str(heartbeat)] + (["--cafile", str(cafile)] if cafile else [])
            if kind == "process":
                self._supervisor = Supervisor(self.address, key, count, name="local", extra_args=beat)
            else:
                self._supervisor = Supervisor(
                    self.address, key, 1, kind="thread", slots=count, name="local", extra_args=beat
                )
            self._coordinator.process_exit = self._supervisor.exit_status  # for WorkerLost's reason
            if elastic:
                self._elastic = Elastic(self._coordinator, self._supervisor, autoscaler)
            self._local_slots = 0 if elastic else count
            if dashboard is not None:
                from .dashboard import Dashboard, dashboard_token

                self.dashboard = Dashboard(
                    self._coordinator, supervisor=self._supervisor, elastic=self._elastic
                )
                self.dashboard.serve(dashboard_token(key), dashboard)
                weakref.finalize(self, self.dashboard.close)
            self._client: Client = LocalClient(self._coordinator)
        else:
            key = shared_key(authkey)
            if not key:
                raise ValueError("Pool(address=...) needs authkey= or MINIPOOL_AUTHKEY")
            self.address = address
            self._local_slots = 0
            if dashboard is not None:
                raise ValueError("dashboard= serves an embedded coordinator: use --dashboard on a remote one")
            if cafile:
                transport_options.setdefault("ssl_context", client_context(cafile))
            self._client = RemoteClient(address, key, heartbeat=heartbeat, **transport_options)
        _live_pools.add(self)
        if self._init is not None:
            self._client.initializer = tasklib.initializer_id(self._init)
        # A pool dropped without shutdown() still stops what it started. The finalizer holds
        # the parts, never the pool: nothing it references points back at ``self``.
        self._finalizer = weakref.finalize(
            self, _release, self._client, self._elastic, self._coordinator, self._supervisor
        )

    # -- concurrent.futures.Executor ---------------------------------------------------------

    @property
    def coordinator(self) -> Coordinator | None:
        """The embedded coordinator (``None`` for a client of a remote one): what
        ``Producer(pool=...)`` and ``Consumer(pool=...)`` talk to, and its ``topics``."""
        return self._coordinator

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
        return mapping.unordered(submit, chunks, sizer, mapping.window(buffersize), timeout, self._feeds)

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
            lambda c: mapping.as_listing(submit(c)),
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

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; let the pending ones finish; then stop the embedded workers
        and coordinator -- before returning with ``wait``, on a thread of its own without.

        A map's input not yet submitted is submitted now (``Executor.map`` submits it all at
        once), so its results can still be read. ``cancel_futures`` cancels the tasks no worker
        has started (and a map's unsubmitted input: reading it raises ``CancelledError``);
        started ones finish. Safe to call again: with ``wait``, a later call waits too.
        """
        if self._shutdown:
            if wait:
                self._closed.wait()
            return
        self._shutdown = True
        for schedule in self._schedules:
            schedule.cancel()
        feeds = self._feeds.live()
        if cancel_futures:
            for feed in feeds:
                feed.cancel()
            self._client.cancel(self._client.task_futures())
            feeds = []
        if wait:
            self._close(feeds)
        else:
            threading.Thread(target=self._close, args=(feeds,), daemon=True, name="minipool-shutdown").start()

    def _close(self, feeds: list[mapping.Feed]) -> None:
        """Submit the maps' remaining input, wait for every pending task, then stop."""
        try:
            for feed in feeds:
                feed.finish()
            while self._client.pending:
                time.sleep(0.005)
            if self.dashboard is not None:
                self.dashboard.close()
            self._finalizer()
        finally:
            self._closed.set()

    # -- Celery-style tasks and introspection ------------------------------------------------

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

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The coordinator's report: ``workers`` (a list), ``queued``, ``running``, ``done``, ..."""
        report = self._client.status(timeout)
        if self._supervisor is not None:
            report["local_processes"] = self._supervisor.pids
            report["restarts"] = self._supervisor.restarts
        if self._elastic is not None:
            report["autoscale"] = {
                "min_workers": self._elastic.autoscaler.min_workers,
                "max_workers": self._elastic.autoscaler.max_workers,
                "events": self._elastic.events,
            }
        return report

    def schedule(self, fn: Callable[..., Any], /, *args: Any, every: float, **kwargs: Any) -> Schedule:
        """Run ``fn(*args, **kwargs)`` on a worker every ``every`` seconds (Celery beat's interval
        schedule) until the returned handle's ``cancel()``."""
        self._check_open()
        schedule = Schedule(self, fn, args, kwargs, every)
        self._schedules.append(schedule)
        return schedule

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

    def wait_for_workers(self, count: int | None = None, timeout: float = 30.0) -> None:
        """Block until ``count`` workers (default: the embedded ones) have connected.

        Raises:
            TimeoutError: they did not all connect in time.
        """
        want = count if count is not None else (self._supervisor.count if self._supervisor else 1)
        deadline = time.monotonic() + timeout
        while len(self.status()["workers"]) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {want} workers connected within {timeout}s")
            time.sleep(0.02)

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

    def _slots(self) -> int:
        if self._local_slots:
            return self._local_slots
        now = time.monotonic()
        if self._slots_cache is None or now - self._slots_cache[0] > 5.0:
            self._slots_cache = (now, max(1, self.status().get("slots", 1)))
        return self._slots_cache[1]

    def _check_open(self) -> None:
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")


def _check_counts(**counts: int | float | None) -> None:
    """Refuse a count that would make a pool that never runs anything (``workers=0``,
    ``max_losses=-1``): ``ProcessPoolExecutor(max_workers=0)`` raises ``ValueError`` too.

    Raises:
        ValueError: a count is not a positive number (``None`` means "the default").
    """
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not value > 0):
            raise ValueError(f"{name} must be greater than 0, not {value!r}")


def _release(
    client: Client, elastic: Elastic | None, coordinator: Coordinator | None, supervisor: Supervisor | None
) -> None:
    """Stop what a pool started: its client; its worker processes (SIGTERM: each stops at once,
    even mid-task), the coordinator leasing nothing more meanwhile, so a task whose worker stops
    first is not started again on another; then the coordinator, once no worker is left to see
    it go (a worker still starting would report a refused connection).

    A pool collected while its futures are pending (``Pool(2).submit(f).result()`` drops the
    pool at once) first lets them finish, as a collected ``ProcessPoolExecutor`` does: on a
    thread that is not a daemon, so the interpreter waits for it before it exits.
    """
    if client.pending and not client.closed:
        parts = (client, elastic, coordinator, supervisor)
        try:
            threading.Thread(target=_release_when_done, args=parts, name="minipool-release").start()
            return
        except RuntimeError:  # the interpreter is finalizing: no new thread, stop now
            pass
    if elastic is not None:
        elastic.close()
    client.close()
    if coordinator is not None:
        coordinator.stop_leasing()
    if supervisor is not None:
        supervisor.close()
    if coordinator is not None:
        coordinator.close()


def _release_when_done(
    client: Client, elastic: Elastic | None, coordinator: Coordinator | None, supervisor: Supervisor | None
) -> None:
    while client.pending and not client.closed:
        time.sleep(0.005)
    client.close()  # so that _release stops at once, never defers again
    _release(client, elastic, coordinator, supervisor)
