"""Weighted balancing by measured pull time: the group's arithmetic, and a slowed instance."""

from minipool.topics import Producer
from minipool.topics.groups import REBALANCE_EVERY, Group
from test_pipesets import KEY, coordinator, instances, members, start, stop, wait_for  # noqa: F401


def test_a_round_robin_group_is_unchanged_by_pull_times():
    group = Group("g", [0] * 12)
    group.join("a"), group.join("b")
    group.handed("a", 10, 0.0)
    group.pulled("a", 5.0)
    assert group.members == {"a": list(range(0, 12, 2)), "b": list(range(1, 12, 2))}


def test_partitions_follow_the_measured_rates():
    group = Group("g", [0] * 12)
    group.balanced = True
    group.join("fast"), group.join("slow")
    now = 0.0
    for _ in range(3):
        group.handed("fast", 10, now)
        group.handed("slow", 10, now)
        group.pulled("fast", now + 0.01)  # 1 ms a record
        group.pulled("slow", now + 0.04)  # 4 ms a record: a quarter of the rate
        now += REBALANCE_EVERY
    assert round(group.weight("fast"), 9) == 1.6 and round(group.weight("slow"), 9) == 0.4
    # 1 each, then the 10 spare in proportion 4:1 (8 : 2)
    assert [len(group.members["fast"]), len(group.members["slow"])] == [9, 3]
    assert sorted(group.members["fast"] + group.members["slow"]) == list(range(12))
    described = group.describe([0] * 12)
    assert [m["weight"] for m in described["members"]] == [1.6, 0.4]
    assert described["balance"] == "pull-time" and described["rebalanced"] >= 1


def test_a_small_change_in_the_measured_rates_moves_no_partition():
    group = Group("g", [0] * 12)
    group.balanced = True
    group.join("a"), group.join("b")
    now = 0.0
    for a, b in [(0.010, 0.010), (0.010, 0.020)]:  # one slow pull of b's: 7/5 by the weights
        group.handed("a", 10, now)
        group.handed("b", 10, now)
        group.pulled("b", now + b)
        group.pulled("a", now + a)
        now += REBALANCE_EVERY
    assert group._shares(["a", "b"]) == [7, 5]
    assert [len(group.members["a"]), len(group.members["b"])] == [6, 6] and group.rebalanced == 0


def test_a_member_too_slow_to_matter_keeps_one_partition_and_leaving_resets_it():
    group = Group("g", [0] * 4)
    group.balanced = True
    group.join("a"), group.join("b")
    group.handed("a", 1, 0.0)
    group.pulled("a", 0.001)
    group.handed("b", 1, 0.0)
    group.pulled("b", 10.0)
    group.handed("a", 1, 2.0)
    group.pulled("a", 2.001)
    assert [len(group.members["a"]), len(group.members["b"])] == [3, 1]
    group.leave("b")
    assert group.members == {"a": [0, 1, 2, 3]} and "b" not in group.pull_times


def test_a_slowed_instance_gets_proportionally_fewer_records(coordinator):  # noqa: F811
    url = coordinator.serve("tcp://127.0.0.1:0")
    slow = start(url, "pipeset_fixtures:squares", "--slowdown", "0.01", "--max-records", "10")
    fast = start(url, "pipeset_fixtures:squares", "--max-records", "10")
    try:
        wait_for(lambda: members(coordinator) == 2 and len(instances(coordinator)) == 2)
        total = 1200
        with Producer(url, authkey=KEY) as producer:
            for i in range(total):
                producer.send("numbers", str(i))

        def done():
            entries = instances(coordinator)
            return entries if sum(e["meta"]["records"] for e in entries) == total else None

        entries = wait_for(done, 60)
        by_pid = {str(p.pid): p for p in (slow, fast)}
        meta = {by_pid[e["key"].split(":")[1]]: e["meta"] for e in entries}
        share = meta[slow]["records"] / total
        assert share < 0.3, share  # round-robin would give it half
        assert meta[slow]["weight"] < 1 < meta[fast]["weight"], meta
        group = coordinator.topics.describe("numbers", "squares")[0]["groups"][0]
        assert group["balance"] == "pull-time" and group["rebalanced"] >= 1
    finally:
        stop(slow, fast)
