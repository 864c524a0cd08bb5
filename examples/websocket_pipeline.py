"""Seed 000 §4's Sender / Receiver / Mapper / Reducer, over minipool's own WebSocket transport.

The seed's JavaScript example streams generated text over a WebSocket: a Sender produces lines
and sends them as binary messages, a Receiver takes them in, a Mapper processes each line and a
Reducer totals the results. Here every part is real and runs on 127.0.0.1:

* the **Receiver** is a service listening on ``ws://127.0.0.1:<free port>``
  (``minipool.transports.listen``); its messages are the *source* of a pipeline;
* the **Sender** (a thread, standing in for a browser or another machine) connects with
  ``minipool.transports.connect``, streams blocks of lines as BINARY messages -- the seed's
  ``TextEncoder`` buffers -- then a TEXT ``END``, and waits for the answer;
* the **Mapper** is a pipeline stage counting the words of each line (the seed's
  ``processLine`` splits a line on ``\\W+`` the same way);
* the **Reducer** is the pipeline's terminal stage merging the per-line counts.

The Receiver sends the top words back to the Sender over the same socket (the seed's
``socket.send(output)``), and the script checks the total against a serial count.

    python examples/websocket_pipeline.py                   # 20,000 lines in blocks of 200
    python examples/websocket_pipeline.py --kind process    # map on two worker processes
    python examples/websocket_pipeline.py --lines 100000 --block 1000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

from minipool import pipeline as pl
from minipool.errors import ConnectionClosed
from minipool.transports import connect, listen
from minipool.transports.wsframes import Opcode

WORDS = (
    "the data pool worker task pipeline stream socket message frame map reduce shard merge "
    "window node queue result key value sender receiver mapper reducer"
).split()
END = "END"  # a TEXT message: the Sender has nothing more to send


def synthetic_text(lines: int, seed: int = 0) -> list[str]:
    """Lines of 3-12 words drawn with a skewed (Zipf-like) frequency, some capitalised."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    text = []
    for _ in range(lines):
        words = rng.choices(WORDS, weights, k=rng.randint(3, 12))
        i = rng.randrange(len(words))
        words[i] = words[i].capitalize()  # the seed capitalises one character per line
        text.append(" ".join(words) + rng.choice([".", ",", "!", ""]))
    return text


# -- the Mapper and the Reducer: plain functions, so they run on any stage kind ----------------


def count_words(line: str) -> Counter:
    """The Mapper: the seed's processLine split (lower case, split on non-word characters)."""
    return Counter(word for word in re.split(r"\W+", line.lower()) if word)


def merge_counts(total: Counter, part: Counter) -> Counter:
    """The Reducer: fold one line's counts into the running total."""
    total.update(part)
    return total


# -- the Receiver: a WebSocket service whose messages feed a pipeline ---------------------------


class Receiver:
    """Listens on ws://127.0.0.1 and yields the lines one sender streams to it."""

    def __init__(self) -> None:
        self.listener = listen("ws://127.0.0.1:0")
        self.url = self.listener.url
        self.conn = None
        self.messages = 0

    def lines(self) -> Iterator[str]:
        """The pipeline's source: accept the sender, yield every line until it says END."""
        self.conn = self.listener.accept()
        self.conn.handshake(timeout=5)  # the HTTP upgrade: 101 Switching Protocols
        while True:
            message = self.conn.recv_message(timeout=10)
            if message.opcode is Opcode.TEXT and message.data.decode() == END:
                return
            self.messages += 1
            yield from message.data.decode("utf-8").splitlines()

    def reply(self, text: str) -> None:
        """Answer the sender, then wait for its close frame (a clean closing handshake)."""
        self.conn.send_text(text)
        try:
            self.conn.recv(timeout=5)
        except (ConnectionClosed, TimeoutError):
            pass
        self.conn.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


# -- the Sender: streams blocks of lines, then reads the answer ---------------------------------


def sender(receiver: Receiver, lines: list[str], block: int, answer: list[str]) -> None:
    try:
        with connect(receiver.url) as conn:  # the client half of the upgrade runs in connect()
            for i in range(0, len(lines), block):
                conn.send("\n".join(lines[i : i + block]).encode("utf-8"))  # a BINARY message
            conn.send_text(END)
            answer.append(conn.recv(timeout=30).decode())
    except Exception as exc:
        print(f"sender failed: {exc!r}", file=sys.stderr)
        receiver.close()  # wakes the receiver's accept/recv, so the pipeline stops too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--block", type=int, default=200, help="lines per WebSocket message")
    parser.add_argument(
        "--kind",
        choices=["thread", "process"],
        default="thread",
        help="where the Mapper runs (process: two worker processes)",
    )
    args = parser.parse_args(argv)
    text = synthetic_text(args.lines)

    start = time.perf_counter()
    receiver = Receiver()
    answer: list[str] = []
    send = threading.Thread(target=sender, args=(receiver, text, args.block, answer), name="sender")
    try:
        send.start()
        workers = 2 if args.kind == "process" else 1
        counts = (
            pl.source(receiver.lines, name="receiver")
            | pl.map(count_words, kind=args.kind, workers=workers, name="mapper")
            | pl.reduce(merge_counts, name="reducer")
        ).run()
        top = counts.most_common(5)
        receiver.reply(json.dumps(top))
        send.join(timeout=10)
    finally:
        receiver.close()
    elapsed = time.perf_counter() - start

    print(
        f"receiver at {receiver.url}: {receiver.messages} messages, "
        f"{sum(counts.values()):,} words in {args.lines:,} lines "
        f"(mapper: {args.kind}), {elapsed:.2f} s"
    )
    print("top words:", ", ".join(f"{word} ({n})" for word, n in top))
    print("the sender got back:", answer[0] if answer else "(nothing)")

    serial = Counter()
    for line in text:
        serial.update(count_words(line))
    if counts != serial or not answer or json.loads(answer[0]) != [list(t) for t in top]:
        print("the pipeline's counts differ from the serial count!", file=sys.stderr)
        return 1
    print("matches the serial count: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
