"""Seed 004's Kafka consumer, on minipool: only its import and its address changed.

The seed's program subscribes to a topic and prints ``fieldToProcess`` from each JSON record,
forever (stop it with Ctrl-C: its ``finally`` closes the consumer). Run a coordinator and feed
the topic first, or let ``examples/kafka_log_tail.py`` do all three: it grows a log file, tails
it into the topic with a producer, and runs this script as the consumer.

    MINIPOOL_AUTHKEY=... python -m minipool coordinator            # tcp://127.0.0.1:7878
    tail -F app.log | MINIPOOL_AUTHKEY=... python -m minipool produce topicName
    MINIPOOL_AUTHKEY=... python examples/kafka_consumer.py [ADDRESS]

The one line above the seed's code picks the address: the first argument, else the
coordinator's default URL.
"""

import sys

ADDRESS = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:7878"

# ---- the seed's code from here on; was: from kafka import KafkaConsumer -----------------------
from minipool.topics import Consumer as KafkaConsumer  # noqa: E402, I001
import json  # noqa: E402


def processMessage(msg):  # noqa: N802 - the seed's name
    message = msg.decode("utf-8")
    parsedMsg = json.loads(message)  # noqa: N806
    print(parsedMsg["fieldToProcess"])


if __name__ == "__main__":
    consumer = KafkaConsumer("topicName", bootstrap_servers=ADDRESS)  # was: 'localhost:9092'
    try:
        for message in consumer:
            processMessage(message.value)
    finally:
        consumer.close()
