"""Tour steps on what travels between processes: message passing vs RPC, the transports, and
compression (seeds 000 §2.1, §3.1, §3.2 and 002's Pyro4).

The transport step runs one workload over every transport with a pool of each open at once,
in turns; the compression step turns each codec's measured ratio and speed into the link
speed below which compressing pays, because "compression saves bandwidth" is only half the
sum.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from ..bench.codecs import english_text, json_logs, random_bytes
from ..bench.echo import tls_files
from ..codecs import available_codecs, get_codec
from .compute import noop
from .step import COLUMNS, Context, Outcome, alternate

__all__ = ["rpc", "transports", "compression", "Greeter", "Chain"]


class Greeter:
    """Seed 002's Pyro4 greeting server, which also counts its callers: an object keeps state."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def welcomeMessage(self, name: str) -> str:  # noqa: N802 -- the seed's name
        with self._lock:
            self.calls += 1
        return "Hi welcome " + str(name)

    def count(self) -> int:
        return self.calls


class Chain:
    """Seed 002's chained objects: forward the message to the next name until it comes back."""

    def __init__(self, name: str, next_name: str, name_server: str, key: bytes) -> None:
        self.name, self.next_name, self.name_server, self.key = name, next_name, name_server, key

    def process(self, message: list[str]) -> list[str]:
        from ..rpc import Proxy

        if self.name in message:
            return ["complete at " + self.name]
        with Proxy(
            "name:tour.chain." + self.next_name, name_server=self.name_server, authkey=self.key
        ) as nxt:
            result: list[str] = nxt.process([*message, self.name])
        return ["passed on from " + self.name, *result]


def welcome(name: str) -> str:
    return "Hi welcome " + str(name)


def rpc(ctx: Context) -> Outcome:
    from .. import rpc as rpclib
    from ..cluster.coordinator import Coordinator

    pool = ctx.pool()
    calls = ctx.size(500, 3000)
    key = secrets.token_hex(16).encode()
    for cls in (Greeter, Chain):
        rpclib.expose(cls)
    with Coordinator(key) as names:
        name_server = names.serve("tcp://127.0.0.1:0")
        with rpclib.Daemon(authkey=key, name_server=name_server) as daemon:
            greeter = Greeter()
            daemon.register(greeter, "tour.greeter")
            for name, nxt in (("1", "2"), ("2", "3"), ("3", "1")):
                daemon.register(Chain(name, nxt, name_server, key), "tour.chain." + name)
            daemon.start()
            with rpclib.Proxy("name:tour.greeter", name_server=name_server, authkey=key) as proxy:
                greeting = proxy.welcomeMessage("LiLei")
                seconds, _ = alternate(
                    {
                        "pool.submit(welcome).result()": lambda: [
                            pool.submit(welcome, "LiLei").result() for _ in range(calls)
                        ],
                        "Proxy.welcomeMessage()": lambda: [
                            proxy.welcomeMessage("LiLei") for _ in range(calls)
                        ],
                    },
                    rounds=3,
                )
                counted = proxy.count()
                with rpclib.Proxy("name:tour.chain.1", name_server=name_server, authkey=key) as first:
                    chain = first.process([])
    task_us = seconds["pool.submit(welcome).result()"] / calls * 1e6
    call_us = seconds["Proxy.welcomeMessage()"] / calls * 1e6
    rows: list[list[Any]] = [
        [
            "pool.submit(welcome).result()",
            ctx.workers,
            calls,
            seconds["pool.submit(welcome).result()"],
            task_us,
        ],
        ["Proxy.welcomeMessage()", 1, calls, seconds["Proxy.welcomeMessage()"], call_us],
    ]
    ratio = task_us / call_us
    return Outcome(
        COLUMNS + ["us per call"],
        rows,
        f"RPC round trip {call_us:.0f} us, a pool task {task_us:.0f} us",
        "A call to one object is a direct round trip "
        + (
            f"({ratio:.1f}x quicker than a pool task here, "
            if ratio >= 1.15
            else f"({ratio:.2f}x a pool task's speed here, "
        )
        + "which goes through the coordinator's queue to whichever worker is free); the object "
        f"kept its state ({counted} calls counted), the pool's workers keep none. Choose RPC to "
        "talk to a particular stateful thing, the pool to spread stateless work.",
        {name: s / calls * 1e6 for name, s in seconds.items()},
        "microseconds per call",
        [
            f"Proxy('name:tour.greeter').welcomeMessage('LiLei') -> {greeting!r}",
            f"the chain of three: {chain}",
        ],
        peer="pool.submit(welcome).result()",
    )


def _transports() -> tuple[list[str], list[str]]:
    kinds = ["tcp", "http", "ws"]
    missing = []
    if importlib.util.find_spec("zmq") is not None:
        kinds.append("zmq+tcp")
    else:
        missing.append("zmq+tcp (pyzmq is not installed: pip install 'minipool[zmq]')")
    if tls_files() is not None:
        kinds.append("tls")
    else:
        missing.append("tls (the openssl command is needed to make a certificate)")
    return kinds, missing


def transports(ctx: Context) -> Outcome:
    from ..pool import Pool

    kinds, missing = _transports()
    n = ctx.size(300, 2000)
    payload = b"x" * 10_000
    pools: dict[str, Any] = {}
    try:
        for kind in kinds:
            options: dict[str, Any] = {}
            if kind == "tls":
                cert, key = tls_files() or ("", "")
                options = {"certfile": cert, "keyfile": key, "cafile": cert}
            pools[kind] = Pool(ctx.workers, transport=kind, kind="thread", **options)
        for pool in pools.values():
            pool.wait_for_workers()

        def workload(pool: Any) -> None:
            for future in [pool.submit(noop, payload) for _ in range(n)]:
                future.result()

        seconds, _ = alternate(
            {kind: functools.partial(workload, pool) for kind, pool in pools.items()}, rounds=3
        )
    finally:
        for pool in pools.values():
            pool.shutdown()
    tcp = seconds["tcp"]
    rows = [[f"{kind}://", ctx.workers, n, s, n / s, tcp / s] for kind, s in seconds.items()]
    slowest = max(seconds, key=lambda k: seconds[k])
    fastest = min(seconds, key=lambda k: seconds[k])
    return Outcome(
        COLUMNS + ["tasks/s", "vs tcp"],
        rows,
        f"tcp {n / tcp:,.0f} tasks/s; slowest {slowest} at {tcp / seconds[slowest]:.2f}x",
        f"The same pool, code and 10 KB tasks over each transport: {fastest}:// was quickest here and "
        f"{slowest}:// slowest ({tcp / seconds[slowest]:.2f}x tcp's rate). HTTP adds a request and "
        "response header per message, WebSocket a few bytes of framing after one upgrade, TLS "
        "encryption: small next to any task that computes for a millisecond, so choose the "
        "transport by what the network between the machines lets through.",
        {f"{kind}://": n / s for kind, s in seconds.items()},
        "tasks per second (10 KB each)",
        [f"not measured here: {m}" for m in missing],
        peer="tcp://",
    )


def _bounded(decompress: Callable[[bytes, int], bytes], max_size: int) -> Callable[[bytes], bytes]:
    return lambda data: decompress(data, max_size)


def _rate(fn: Any, data: Any, rounds: int) -> tuple[Any, float]:
    seconds, values = alternate({"run": lambda: fn(data)}, rounds)
    return values["run"], len(data) / seconds["run"] / 1e6


def compression(ctx: Context) -> Outcome:
    size = ctx.size(256_000, 2_000_000)
    rounds = ctx.size(2, 3)
    payloads = {
        "English text": english_text(size),
        "JSON logs": json_logs(size),
        "random bytes": random_bytes(size),
    }
    rows: list[list[Any]] = []
    chart: dict[str, float] = {}
    notes: list[str] = []
    began = time.perf_counter()
    link = 12.5  # MB/s: a 100 Mbit/s link
    for name in [c for c in available_codecs() if c != "none"]:
        codec = get_codec(name)
        for kind, data in payloads.items():
            packed, pack_rate = _rate(codec.compress, data, rounds)
            _, unpack_rate = _rate(_bounded(codec.decompress, len(data) * 2), packed, rounds)
            ratio = len(data) / len(packed)
            # Compressing pays while sending the saved bytes takes longer than packing and
            # unpacking them: below this link speed (MB/s), compress.
            saved = 1 - 1 / ratio
            unpack_per_input = unpack_rate * ratio  # the decompressor's speed in input bytes
            break_even = saved / (1 / pack_rate + 1 / unpack_per_input) if saved > 0 else 0.0
            rows.append([f"{name}, {kind}", 1, 1, len(data) / pack_rate / 1e6, ratio, pack_rate, break_even])
            if kind == "JSON logs":
                chart[f"{name}: pays below MB/s"] = break_even
    for level in range(1, 10):
        data = payloads["JSON logs"]
        packed, rate = _rate(functools.partial(gzip.compress, compresslevel=level, mtime=0), data, rounds)
        rows.append(
            [
                f"gzip level {level}, JSON logs",
                1,
                1,
                len(data) / rate / 1e6,
                len(data) / len(packed),
                rate,
                "",
            ]
        )
    zstd = "zstd" in available_codecs()
    if not zstd:
        notes.append(
            "zstd not measured: the zstandard package is not installed (pip install 'minipool[zstd]')"
        )
    notes.append(f"payloads of {size:,} bytes each; measured in {time.perf_counter() - began:.1f} s")
    gzip1 = next(r for r in rows if r[0] == "gzip, JSON logs")
    random_row = next(r for r in rows if r[0] == "gzip, random bytes")
    levels = [r for r in rows if r[0].startswith("gzip level")]
    return Outcome(
        COLUMNS + ["ratio", "compress MB/s", "pays below link MB/s"],
        rows,
        f"gzip on logs: {gzip1[4]:.1f}x smaller, pays below {gzip1[6]:.0f} MB/s links",
        f"Compression pays only while the link is slower than the codec: gzip shrinks JSON logs "
        f"{gzip1[4]:.1f}x at {gzip1[5]:.0f} MB/s, so it wins on links under about {gzip1[6]:.0f} MB/s "
        f"(a 100 Mbit/s link is {link} MB/s) and loses on loopback or a fast LAN; random bytes do "
        f"not shrink ({random_row[4]:.2f}x) and are never worth compressing. gzip level 9 gains "
        f"{levels[-1][4] / levels[0][4]:.2f}x the ratio of level 1 for {levels[0][5] / levels[-1][5]:.1f}x "
        "the time, which is why minipool's default gzip level is 1. HTTP can compress too "
        "(Content-Encoding), as can any transport here: compression is a codec, not a protocol.",
        chart,
        "link speed (MB/s) below which compressing JSON logs pays",
        notes,
    )
