"""The topic examples run end to end as scripts and check themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_seed_s_kafka_consumer_reads_a_tailed_log_file():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "kafka_log_tail.py"), "--records", "150", "--rate", "500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert "150 lines sent to topicName" in out.stdout
    assert "the seed's consumer printed: event-0 ... event-149" in out.stdout
    assert "every fieldToProcess, in order: yes" in out.stdout
    assert "its finally closed it" in out.stdout


def test_the_kafka_consumer_differs_from_the_seed_only_in_its_import_and_address():
    source = (ROOT / "examples" / "kafka_consumer.py").read_text()
    ours = source[source.index("# ---- the seed's code") :].splitlines()[1:]
    assert ours[0].startswith("from minipool.topics import Consumer as KafkaConsumer")
    assert 'consumer = KafkaConsumer("topicName", bootstrap_servers=ADDRESS)' in source
    for line in (
        "for message in consumer:",
        "processMessage(message.value)",
        "consumer.close()",
        'print(parsedMsg["fieldToProcess"])',
        'message = msg.decode("utf-8")',
    ):
        assert line in source
