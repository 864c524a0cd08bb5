"""Seed 000 §4.1's Producer, Consumer and Executor over HTTP, fixed and run end to end.

The seed's script has three parts: a Producer writes 100 test messages to a file and uploads it
with ``requests.post``; a Consumer reads the file line by line and hands ``len(line)`` to a
``ThreadPoolExecutor``; an Executor divides the summed lengths by the number of lines and writes
the average to ``/tmp/output.txt``. As printed it cannot work:

* it writes no newlines, so the "100 lines" are one line, and the average it reports is the
  length of the whole file (``--seed-bug`` shows the figure it would print);
* it posts to ``http://localhost:8000/tmp/input.txt`` with no body, and nothing serves that
  address: there is no server at all;
* it needs ``requests``, writes to fixed paths in ``/tmp``, never shuts its executor down, and
  opens the input a second time (never closed) only to count its lines.

Here the server exists: a Receiver listening on minipool's ``http://`` transport (POST bodies up,
one chunked response down, see docs/transports.md). The Producer connects to it, sends the file
in blocks and an empty message to end, and reads back how many lines the Receiver stored. The
Consumer and the Executor then run on a ``minipool.Pool`` whose coordinator also speaks HTTP:
``pool.map(len, lines)`` instead of one ``submit`` per line, and the average is checked against
a serial computation. Everything binds 127.0.0.1 and lives in a temporary directory.

    python examples/producer_consumer_http.py [--messages 100] [--seed-bug]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

from minipool import Pool
from minipool.transports import connect, listen
from minipool.transports.base import Listener

BLOCK = 4096  # bytes per HTTP message the Producer sends


def write_messages(path: Path, count: int, newline: str = "\n") -> None:
    """The seed's test data; ``newline=""`` reproduces its bug."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(f"Hello World! This is a test message {i}.{newline}")


class Receiver:
    """The server the seed posts to: stores what one upload sends into ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener: Listener = listen("http://127.0.0.1:0")
        self.thread = threading.Thread(target=self.serve_one, name="receiver", daemon=True)
        self.thread.start()

    def serve_one(self) -> None:
        conn = self.listener.accept()
        conn.handshake(timeout=10)
        with conn, open(self.path, "wb") as f:
            while block := conn.recv(timeout=10):  # an empty message ends the upload
                f.write(block)
            f.flush()
            lines = self.path.read_bytes().count(b"\n")
            conn.send(f"stored {lines} lines".encode())

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


class Producer:
    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url

    def produce_data(self, count: int) -> str:
        write_messages(self.path, count)
        with connect(self.url) as conn, open(self.path, "rb") as f:
            conn.handshake(timeout=10)
            while block := f.read(BLOCK):
                conn.send(block)
            conn.send(b"")
            return conn.recv(timeout=10).decode()


class Consumer:
    def __init__(self, path: Path, pool: Pool) -> None:
        self.path = path
        self.pool = pool

    def lines(self) -> list[str]:
        with open(self.path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]

    def consume_data(self) -> tuple[int, int]:
        """The summed length of the lines, and how many there were (read once)."""
        lines = self.lines()
        return sum(self.pool.map(len, lines, chunksize=None)), len(lines)


class Executor(Consumer):
    def execute_pipeline(self, output: Path) -> float:
        total, count = self.consume_data()
        if count == 0:
            raise ValueError(f"{self.path} holds no lines to average")
        average = total / count
        output.write_text(f"Processed Length: {average}\n", encoding="utf-8")
        return average


def seed_figure(folder: Path, count: int) -> float:
    """What the seed's own code computes from its newline-less file: one "line"."""
    path = folder / "seed-input.txt"
    write_messages(path, count, newline="")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return sum(map(len, lines)) / len(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100, help="test messages to produce")
    parser.add_argument("--seed-bug", action="store_true", help="also show the seed's own figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="minipool-pc-") as tmp:
        folder = Path(tmp)
        receiver = Receiver(folder / "received.txt")
        print(f"receiver listening on {receiver.listener.url} (minipool's http:// transport)")
        try:
            reply = Producer(folder / "input.txt", receiver.listener.url).produce_data(args.messages)
        finally:
            receiver.close()
        print(f"producer uploaded {(folder / 'input.txt').stat().st_size} bytes; receiver: {reply}")

        with Pool(2, transport="http") as pool:
            print(f"executor: a minipool.Pool with 2 workers, its coordinator at {pool.address}")
            output = folder / "output.txt"
            average = Executor(folder / "received.txt", pool).execute_pipeline(output)
            written = output.read_text(encoding="utf-8").strip()
        print(f"output.txt: {written}")

        expected_lines = [f"Hello World! This is a test message {i}." for i in range(args.messages)]
        expected = sum(map(len, expected_lines)) / len(expected_lines)
        if args.seed_bug:
            print(
                f"the seed's code (no newlines) would report {seed_figure(folder, args.messages):.1f}: "
                f"the length of the whole file, read as one line"
            )
    ok = reply == f"stored {args.messages} lines" and average == expected
    print(f"matches a serial computation ({expected:.2f} characters per line): {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
