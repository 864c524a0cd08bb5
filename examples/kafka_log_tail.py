"""Seed 004's Kafka scenario end to end: a growing log file, a producer tailing it, and the
seed's consumer (``examples/kafka_consumer.py``, unchanged but for its import and address).

The seed: "a log file whose content is generated in real time, tens of KB a second, so the file
keeps growing; we want to pull a field out of each record as it arrives". This script starts a
coordinator (``python -m minipool coordinator``), a writer thread that appends JSON lines to a
log file, a producer that follows the file like ``tail -F`` and sends each new line to the
topic ``topicName``, and the seed's consumer as a program of its own. It checks that the
consumer printed ``fieldToProcess`` of every record it was sent, in order, then stops it with
Ctrl-C (SIGINT, which runs its ``finally: consumer.close()``) and exits 0.

    python examples/kafka_log_tail.py [--records N] [--rate PER_S]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from minipool.topics import Producer

HERE = Path(__file__).resolve().parent


def write_log(path: Path, records: int, rate: float, stop: threading.Event) -> None:
    """The application: appends one JSON record per line, as a service writing its log."""
    with open(path, "a") as log:
        for i in range(records):
            if stop.is_set():
                return
            log.write(json.dumps({"seq": i, "fieldToProcess": f"event-{i}", "pad": "x" * 200}) + "\n")
            log.flush()
            time.sleep(1 / rate)


def tail(path: Path, producer: Producer, records: int) -> None:
    """``tail -F`` into a topic: every complete new line becomes a record."""
    sent = 0
    with open(path, "rb") as log:
        pending = b""
        while sent < records:
            chunk = log.readline()
            if not chunk:
                time.sleep(0.01)  # at the end of the file: wait for it to grow
                continue
            pending += chunk
            if pending.endswith(b"\n"):  # a whole line (the writer may be mid-line)
                producer.send("topicName", pending.rstrip(b"\n"))
                pending = b""
                sent += 1
    producer.flush()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=300, help="records the application logs")
    parser.add_argument("--rate", type=float, default=200.0, help="records per second it logs")
    args = parser.parse_args()
    key = secrets.token_hex(16)
    env = {**os.environ, "MINIPOOL_AUTHKEY": key, "PYTHONPATH": str(HERE.parent), "PYTHONUNBUFFERED": "1"}
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "minipool", "coordinator", "--bind", "tcp://127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert coordinator.stdout is not None
    address = coordinator.stdout.readline().split()[-1]
    print(f"coordinator at {address}")
    consumer = subprocess.Popen(
        [sys.executable, str(HERE / "kafka_consumer.py"), address],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # its KeyboardInterrupt traceback at Ctrl-C: the seed has no handler
        text=True,
    )
    assert consumer.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line.strip()) for line in consumer.stdout], daemon=True
    ).start()
    try:
        with tempfile.TemporaryDirectory() as directory, Producer(address, authkey=key) as producer:
            # The consumer reads from the end of the topic (Kafka's default, 'latest'): it is
            # subscribed once a record sent now reaches it.
            while True:
                producer.send("topicName", json.dumps({"fieldToProcess": "hello"})).result(10)
                try:
                    if lines.get(timeout=0.2) == "hello":
                        break
                except queue.Empty:
                    continue
            path = Path(directory) / "app.log"
            path.touch()
            stop = threading.Event()
            writer = threading.Thread(target=write_log, args=(path, args.records, args.rate, stop))
            writer.start()
            tail(path, producer, args.records)
            writer.join()
            print(f"the log grew to {path.stat().st_size:,} bytes; {args.records} lines sent to topicName")
        printed: list[str] = []
        while len(printed) < args.records:
            line = lines.get(timeout=30)
            if line != "hello":  # a subscription probe that crossed the first records
                printed.append(line)
        expected = [f"event-{i}" for i in range(args.records)]
        print(f"the seed's consumer printed: {printed[0]} ... {printed[-1]}")
        print(f"every fieldToProcess, in order: {'yes' if printed == expected else 'NO'}")
        ok = printed == expected
    finally:
        consumer.send_signal(signal.SIGINT)  # Ctrl-C: the seed's finally closes the consumer
        consumer.wait(10)
        coordinator.terminate()
        coordinator.wait(10)
    assert consumer.stderr is not None
    interrupted = "KeyboardInterrupt" in consumer.stderr.read()
    how = " (KeyboardInterrupt)" if interrupted else ""
    print(f"the consumer stopped at Ctrl-C{how}; its finally closed it")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
