"""What checking a large message costs, and whether overlapping the check with the copy hides it.

Technique: *take the cost apart before optimising it*. Every minipool message carries a CRC-32
(:mod:`minipool.wire`), so a 1 MB echo reads the megabyte four times only to check it: the
sender before the head goes out (the head carries the CRC), the receiver after the last byte,
both ways. Two processes on two cores could do that work *while* the bytes move: the receiver
checks each chunk as it arrives, and a sender that puts the CRC in a trailer, after the body,
checks each chunk just before sending it. This bench measures that idea on a raw socket, with
nothing of minipool in the way, so the figures say what the idea is worth before the wire
format pays for it:

* ``none``: no check at all (the floor; what ``multiprocessing.connection`` does);
* ``whole``: the sender's CRC over the body, then one ``sendmsg``; the receiver's
  ``recv(MSG_WAITALL)``, then its CRC -- what minipool does;
* ``overlapped receive``: the same sender; the receiver checks each chunk as it arrives (no
  change to the wire format needed: the CRC is already in the head);
* ``overlapped both``: the sender sends the head, then CRC-and-send chunk by chunk, then a
  4-byte trailer; the receiver as above.

Each is an echo server in a process of its own and a client in this one, taking turns; a
figure is the median round trip of the quietest turn, as the scheduler places the processes
and again with client and server pinned to *two different* cores (the best case for overlap,
and :func:`~minipool.bench.common.pin` needs Linux and two cores). A second table times the
parts of a 1 MB message in this process: the CRC, a copy, unpickling, and a copy into fresh
pages (what a buffer that the allocator gave back to the kernel costs to fill again).
"""

from __future__ import annotations

import argparse
import mmap
import os
import pickle
import socket
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from .common import CAN_PIN, pin, print_table, progress
from .rpc import SPAWN

_HEAD = struct.Struct("!II")  # length, CRC (0 when a trailer carries it)
_TRAILER = struct.Struct("!I")
_WAITALL = getattr(socket, "MSG_WAITALL", 0)
_ROUNDS = 6
MODES = ["none", "whole", "overlapped receive", "overlapped both"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=float, default=6.0, help="seconds in all (default: %(default)s)")
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes per message (default: 1 MiB)")
    parser.add_argument("--chunk", type=int, default=256 * 1024, help="overlap chunk (default: 256 KiB)")


def _send(sock: socket.socket, data: bytes | memoryview, mode: str, chunk: int) -> None:
    if mode == "overlapped both":
        sock.sendall(_HEAD.pack(len(data), 0))
        crc = 0
        with memoryview(data) as whole:
            for start in range(0, len(data), chunk):
                part = whole[start : start + chunk]
                crc = zlib.crc32(part, crc)
                sock.sendall(part)
        sock.sendall(_TRAILER.pack(crc))
        return
    crc = zlib.crc32(data) if mode != "none" else 0
    sock.sendmsg([_HEAD.pack(len(data), crc), data])


def _receive(sock: socket.socket, mode: str, chunk: int, buffer: bytearray) -> memoryview:
    size, crc = _HEAD.unpack(sock.recv(_HEAD.size, _WAITALL))
    view = memoryview(buffer)[:size]
    if mode in ("none", "whole"):
        sock.recv_into(view, size, _WAITALL)
        if mode == "whole" and zlib.crc32(view) != crc:
            raise ValueError("damaged")
        return view
    have, running = 0, 0
    while have < size:
        got = sock.recv_into(view[have:], min(chunk, size - have), _WAITALL)
        running = zlib.crc32(view[have : have + got], running)
        have += got
    if mode == "overlapped both":
        (crc,) = _TRAILER.unpack(sock.recv(_TRAILER.size, _WAITALL))
    if running != crc:
        raise ValueError("damaged")
    return view


def _serve(mode: str, chunk: int, size: int, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray(size)  # one buffer, used again: fresh pages are timed on their own
        try:
            while True:
                _send(sock, _receive(sock, mode, chunk, buffer), mode, chunk)
        except (OSError, struct.error):
            return  # the client is done


class _Echo:
    """One mode's echo server (a process of its own) and this process's end of it."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode, self.chunk = mode, args.chunk
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            self.server = SPAWN.Process(target=_serve, args=(mode, args.chunk, args.size, port), daemon=True)
            self.server.start()
            listener.settimeout(30)
            self.sock, _ = listener.accept()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(args.size)

    def echo(self, data: bytes) -> memoryview:
        _send(self.sock, data, self.mode, self.chunk)
        return _receive(self.sock, self.mode, self.chunk, self.buffer)

    def turn(self, data: bytes, seconds: float) -> float:
        times: list[float] = []
        stop = time.perf_counter() + seconds
        while len(times) < 3 or time.perf_counter() < stop:
            start = time.perf_counter()
            self.echo(data)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def close(self) -> None:
        self.sock.close()
        self.server.join(10)


def _turns(
    args: argparse.Namespace, data: bytes, placements: list[str]
) -> dict[tuple[str, str], list[float]]:
    """Each mode's median round trip, turn by turn, the modes taking turns round after round."""
    echoes = {mode: _Echo(mode, args) for mode in MODES}
    turns: dict[tuple[str, str], list[float]] = {}
    mine = os.sched_getaffinity(0) if CAN_PIN else set()
    cores = sorted(mine)
    try:
        for echo in echoes.values():
            if bytes(echo.echo(data)) != data:
                raise RuntimeError(f"{echo.mode}: the echo came back different")
        seconds = args.budget / _ROUNDS / len(MODES) / len(placements)
        for round_no in range(_ROUNDS):
            order = MODES[round_no % len(MODES) :] + MODES[: round_no % len(MODES)]
            for mode in order:
                echo = echoes[mode]
                turns.setdefault((mode, "scheduled"), []).append(echo.turn(data, seconds))
                if "two cores" in placements:
                    assert echo.server.pid is not None  # started
                    server_cpus = os.sched_getaffinity(echo.server.pid)
                    pin([os.getpid()], {cores[0]})
                    pin([echo.server.pid], {cores[1]})
                    try:
                        turns.setdefault((mode, "two cores"), []).append(echo.turn(data, seconds))
                    finally:
                        pin([os.getpid()], mine)
                        pin([echo.server.pid], server_cpus)
            progress(f"round {round_no + 1}/{_ROUNDS}")
    finally:
        for echo in echoes.values():
            echo.close()
    return turns


def _parts(size: int) -> list[list[Any]]:
    """Microseconds per message for each part of moving ``size`` bytes, in this process."""
    data = os.urandom(size)
    pickled = pickle.dumps(data, protocol=5)
    target = bytearray(size)

    def fresh_pages() -> None:
        # An anonymous mapping, touched for the first time: the kernel faults in and zeroes
        # each page -- what a buffer costs once the allocator has given its pages back.
        with mmap.mmap(-1, size) as fresh:
            fresh[:] = data

    def copy() -> None:
        target[:] = data

    parts: dict[str, Callable[[], object]] = {
        "zlib.crc32": lambda: zlib.crc32(data),
        "copy into a buffer in use": copy,
        "copy into fresh pages": fresh_pages,
        "pickle.loads (bytes)": lambda: pickle.loads(pickled),
    }
    rows = []
    for name, part in parts.items():
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(20):
                part()
            best = min(best, (time.perf_counter() - start) / 20)
        rows.append([name, best * 1e6])
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = os.urandom(args.size)
    placements = ["scheduled", "two cores"] if CAN_PIN else ["scheduled"]
    turns = _turns(args, data, placements)
    rows = []
    for mode in MODES:
        row: dict[str, Any] = {"mode": mode}
        for placement in placements:
            best, whole = min(turns[(mode, placement)]), min(turns[("whole", placement)])
            row[f"{placement}_us"] = best * 1e6
            row[f"{placement}_vs_whole"] = best / whole
        rows.append(row)
    print_table(
        f"A {args.size:,}-byte echo on a raw socket, checked four ways ({args.chunk:,}-byte chunks)",
        ["check", *(h for p in placements for h in (f"{p} us", f"{p} / whole"))],
        [[r["mode"], *(r[f"{p}{k}"] for p in placements for k in ("_us", "_vs_whole"))] for r in rows],
    )
    parts = _parts(args.size)
    print_table(f"The parts of moving {args.size:,} bytes, in one process", ["part", "us"], parts)
    return {"rows": rows, "parts": [{"part": n, "us": us} for n, us in parts], "size": args.size}
