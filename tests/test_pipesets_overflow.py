"""A capped pipe set is held back while its output channel's consumers are away."""

import time

from minipool.topics import Consumer, Producer
from test_pipesets import KEY, coordinator, instances, members, start, stop, wait_for  # noqa: F401


def held_in(c, topic):
    return sum(p["end"] - p["start"] for p in c.topics.describe(topic)[0]["partitions"])


def test_a_capped_channel_holds_its_producers_and_resumes_when_a_consumer_returns(coordinator):  # noqa: F811
    url = coordinator.serve("tcp://127.0.0.1:0")
    process = start(url, "pipeset_fixtures:capped", "--max-records", "10")
    try:
        wait_for(lambda: members(coordinator, group="capped") == 1)
        total = 300
        with Producer(url, authkey=KEY) as producer:
            for i in range(total):
                producer.send("numbers", str(i))
        wait_for(lambda: any(e["meta"]["held"] for e in instances(coordinator, "capped")))
        time.sleep(0.5)  # held, it appends nothing more: the centre holds the cap and one batch
        # A step is refused once its batch would pass the cap, so it is held with the channel
        # within one batch of the cap, whatever size the batches came in.
        assert 50 - 10 < held_in(coordinator, "kept") <= 50 + 10
        lag = coordinator.topics.describe("numbers", "capped")[0]["groups"][0]["lag"]
        assert lag >= total - 60  # its inputs wait, unacknowledged, upstream
        seen = []
        with Consumer(
            "kept", address=url, authkey=KEY, group="reader", auto_offset_reset="earliest"
        ) as reader:
            started = time.monotonic()
            while len(seen) < total and time.monotonic() - started < 30:
                seen += [int(r.value) for r in reader.poll(1.0)]
                # never more than the cap and a batch waits for the reader
                assert coordinator.topics.describe("kept", "reader")[0]["groups"][0]["lag"] <= 50 + 10
        assert sorted(seen) == list(range(total))
    finally:
        stop(process)
