"""Remote method calls: ``minipool.rpc`` beside the standard library's two RPC systems.

Technique: *measure against the peers a user would otherwise pick, in the same run*. Python
ships two ways to call a method in another process: ``xmlrpc`` (XML over HTTP, one request per
call) and ``multiprocessing.managers`` (a proxy to an object in a manager process, pickles over
``multiprocessing.connection``, authenticated with HMAC like minipool). Each serves the same
object from a process of its own; the client calls it in lockstep and the implementations take
turns, round after round. A figure is the median round trip of the quietest turn (a burst of
other load only ever slows a turn down), timed as the scheduler places the threads and again
with client and server pinned to one core, which measures each implementation's own code
(see :func:`~minipool.bench.common.on_one_core` for why both).

Two calls: ``add(1)`` (a small call: what the machinery costs) and ``echo(data)`` with 1 MB of
bytes each way (what moving an argument costs; ``xmlrpc`` must base64 it into XML). Then the
same megabyte as a pool task: ``submit(bytes, data).result()`` (``bytes`` of a ``bytes`` is
that very object, so the task is an echo) on ``minipool.Pool(1)`` beside
``concurrent.futures.ProcessPoolExecutor(1)``, taking turns the same way.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import multiprocessing
import multiprocessing.managers
import os
import statistics
import time
import xmlrpc.client
import xmlrpc.server
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .common import CAN_PIN, on_one_core, positive, print_table, progress

_ROUNDS = 10
IMPLS = ["minipool.rpc", "multiprocessing.managers", "xmlrpc"]
_KEY = os.urandom(16)


class Service:
    """The object every implementation serves."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, n: int) -> int:
        self.total += n
        return self.total

    def echo(self, data: bytes) -> bytes:
        return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="seconds spent on each implementation and call (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        default=_ROUNDS,
        help="turns each implementation takes; the budget is shared among them (default: %(default)s)",
    )
    parser.add_argument("--transport", default="tcp", help="minipool.rpc's transport (default: tcp)")


class _Manager(multiprocessing.managers.BaseManager):
    pass


_Manager.register("Service", Service)

#: How every server process here starts: spawn, never fork, since this process runs threads (a
#: fork copies locks other threads hold; 3.12 warns, 3.14 no longer forks by default).
SPAWN = multiprocessing.get_context("spawn")


def _serve(kind: str, transport: str, pipe: Connection, key: bytes) -> None:
    if kind == "minipool.rpc":
        from .. import rpc

        daemon = rpc.Daemon(f"{transport}://127.0.0.1:0", authkey=key)
        pipe.send(daemon.register(rpc.expose(Service)(), "service"))
        daemon.serve_forever()
    elif kind == "xmlrpc":
        server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
        server.register_instance(Service())
        pipe.send(server.server_address[1])
        server.serve_forever()


def _client(kind: str, address: Any) -> tuple[Any, Callable[[], object], int | None]:
    """A proxy with ``add`` and ``echo``, what to close when done, and a manager's pid.

    The proxy is ``Any``: each library makes its methods at run time, from the remote object.
    """
    if kind == "minipool.rpc":
        from .. import rpc

        proxy = rpc.Proxy(address, authkey=_KEY)
        return proxy, proxy._close, None
    if kind == "xmlrpc":
        server = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{address}", allow_none=True)
        return server, server("close"), None
    manager: Any = _Manager(address=("127.0.0.1", 0), authkey=_KEY, ctx=SPAWN)
    manager.start()
    # register() adds Service() at run time; BaseManager keeps its process private, and its pid
    # is what on_one_core() pins.
    return manager.Service(), manager.shutdown, manager._process.pid


def _turn(call: Callable[[], object], seconds: float) -> float:
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < stop:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _round_trip(executor: concurrent.futures.Executor, data: bytes) -> object:
    return executor.submit(bytes, data).result()


def _task_rows(budget: float, data: bytes, rounds: int) -> list[dict[str, Any]]:
    """A 1 MB pool task's round trip on minipool's Pool beside ProcessPoolExecutor."""
    from .. import Pool

    with Pool(1) as pool, concurrent.futures.ProcessPoolExecutor(1, mp_context=SPAWN) as ppe:
        pool.wait_for_workers()
        executors: dict[str, concurrent.futures.Executor] = {
            "minipool.Pool": pool,
            "ProcessPoolExecutor": ppe,
        }
        for name, executor in executors.items():  # warm up, and check that each answers right
            if executor.submit(bytes, data).result() != data:
                raise RuntimeError(f"{name} echoed something else")
        turns: dict[str, list[float]] = {name: [] for name in executors}
        names = list(executors)
        for round_no in range(rounds):
            for name in names[round_no % 2 :] + names[: round_no % 2]:
                call = functools.partial(_round_trip, executors[name], data)
                turns[name].append(_turn(call, budget / rounds))
    base = min(turns["minipool.Pool"])
    return [
        {"task": "bytes(1 MB)", "impl": name, "rtt_us": min(t) * 1e6, "rtt_vs_minipool": min(t) / base}
        for name, t in turns.items()
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = SPAWN
    servers: list[BaseProcess] = []
    clients: dict[str, tuple[Any, Callable[[], object]]] = {}
    pids: dict[str, int] = {}  # the process serving each implementation
    try:
        for kind in IMPLS:
            address: Any = None
            if kind != "multiprocessing.managers":  # a manager starts its own process
                parent, child = ctx.Pipe()
                process = ctx.Process(target=_serve, args=(kind, args.transport, child, _KEY), daemon=True)
                process.start()
                servers.append(process)
                assert process.pid is not None  # a started process has one
                pids[kind] = process.pid
                if not parent.poll(30):
                    raise RuntimeError(f"the {kind} server did not start")
                address = parent.recv()
            proxy, close, manager_pid = _client(kind, address)
            clients[kind] = (proxy, close)
            if manager_pid is not None:
                pids[kind] = manager_pid
        data = os.urandom(1 << 20)
        calls = {"add(1)": lambda p: p.add(1), "echo(1 MB)": lambda p: p.echo(data)}
        for name, call in calls.items():  # warm up, and check that each answers right
            for kind, (proxy, _) in clients.items():
                result = call(proxy)
                if name.startswith("echo") and bytes(getattr(result, "data", result)) != data:
                    raise RuntimeError(f"{kind} echoed something else")
        turns: dict[tuple[str, str, str], list[float]] = {}
        placements = ["scheduled", "one core"] if CAN_PIN else ["scheduled"]
        for round_no in range(args.rounds):
            order = IMPLS[round_no % len(IMPLS) :] + IMPLS[: round_no % len(IMPLS)]
            for name, call in calls.items():
                for kind in order:
                    proxy = clients[kind][0]
                    seconds = args.budget / args.rounds / len(placements)
                    turns.setdefault((name, kind, "scheduled"), []).append(
                        _turn(functools.partial(call, proxy), seconds)
                    )
                    if CAN_PIN:
                        with on_one_core([os.getpid(), pids[kind]]):
                            turns.setdefault((name, kind, "one core"), []).append(
                                _turn(functools.partial(call, proxy), seconds)
                            )
            progress(f"round {round_no + 1}/{args.rounds}")
    finally:
        for _, close in clients.values():
            try:
                close()
            except Exception:  # noqa: BLE001 -- shutting down after a failure
                pass
        for server in servers:
            server.terminate()
            server.join(10)
    rows = []
    for name in calls:
        for kind in IMPLS:
            row: dict[str, Any] = {"call": name, "impl": kind}
            for placement in placements:
                best = min(turns[(name, kind, placement)])
                base = min(turns[(name, "minipool.rpc", placement)])
                key = "rtt_us" if placement == "scheduled" else "rtt_one_core_us"
                row[key] = best * 1e6
                row[key.replace("_us", "_vs_minipool")] = best / base
            rows.append(row)
    headers = ["call", "implementation", "rtt us", "time / minipool.rpc"]
    if CAN_PIN:
        headers += ["1 core us", "1 core / minipool.rpc"]
    print_table(
        f"Remote method calls over loopback (minipool.rpc over {args.transport}://)",
        headers,
        [
            [r["call"], r["impl"], r["rtt_us"], r["rtt_vs_minipool"]]
            + ([r["rtt_one_core_us"], r["rtt_one_core_vs_minipool"]] if CAN_PIN else [])
            for r in rows
        ],
    )
    progress("a 1 MB pool task")
    tasks = _task_rows(args.budget, data, args.rounds)
    print_table(
        "A 1 MB pool task's round trip (submit(bytes, data).result(), one worker process)",
        ["task", "executor", "rtt us", "time / minipool.Pool"],
        [[r["task"], r["impl"], r["rtt_us"], r["rtt_vs_minipool"]] for r in tasks],
    )
    return {"rows": rows, "tasks": tasks, "transport": args.transport}
