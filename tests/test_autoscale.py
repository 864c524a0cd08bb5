"""The autoscaling policy, driven by a fake clock."""

from __future__ import annotations

import pytest

from minipool.cluster.autoscale import Autoscaler, Decision, WorkerLoad


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def busy(i: int, slots: int = 2) -> WorkerLoad:
    return WorkerLoad(f"w{i}", slots=slots, inflight=slots)


def idle(i: int, since: float, slots: int = 2) -> WorkerLoad:
    return WorkerLoad(f"w{i}", slots=slots, inflight=0, idle_since=since)


def test_fills_up_to_the_minimum_at_once(clock):
    scaler = Autoscaler(2, 5, clock=clock)
    decision = scaler.decide(0, 0.0, [])
    assert decision == Decision(add=2, reason="0 workers, below the minimum of 2")
    assert scaler.decide(0, 0.0, [idle(0, clock.now)]).add == 1  # no cooldown for the floor


def test_grows_only_after_tasks_waited_long_enough(clock):
    scaler = Autoscaler(1, 4, scale_up_after=0.5, clock=clock)
    workers = [busy(0)]
    assert not scaler.decide(3, 0.4, workers)
    decision = scaler.decide(3, 0.6, workers)
    assert decision.add == 2 and "3 tasks queued" in decision.reason  # ceil(3 / 2 slots)
    assert scaler.events[-1]["action"] == "add" and scaler.events[-1]["time"] == clock.now


def test_free_slots_mean_no_growth(clock):
    scaler = Autoscaler(1, 4, clock=clock)
    assert not scaler.decide(2, 5.0, [WorkerLoad("w0", slots=4, inflight=1)])


def test_never_above_the_maximum_and_cooldown_between_actions(clock):
    scaler = Autoscaler(1, 3, cooldown=2.0, clock=clock)
    assert scaler.decide(100, 1.0, [busy(0)]).add == 2  # capped at 3 workers
    clock.now += 1.0
    assert scaler.decide(100, 2.0, [busy(0)]) == Decision(reason="cooling down")
    clock.now += 1.5
    assert scaler.decide(100, 3.0, [busy(0), busy(1)]).add == 1
    clock.now += 10
    assert not scaler.decide(100, 3.0, [busy(0), busy(1), busy(2)])


def test_shrinks_workers_idle_past_the_timeout_never_below_minimum(clock):
    scaler = Autoscaler(1, 5, idle_timeout=5.0, cooldown=0, clock=clock)
    workers = [idle(0, clock.now - 9), busy(1), idle(2, clock.now - 6), idle(3, clock.now - 1)]
    decision = scaler.decide(0, 0.0, workers)
    assert decision.remove == ["w0", "w2"]  # longest idle first
    only_idle = [idle(0, clock.now - 9), idle(2, clock.now - 6)]
    assert scaler.decide(0, 0.0, only_idle).remove == ["w0"]  # keeps the minimum of 1
    assert not scaler.decide(0, 0.0, [idle(0, clock.now - 9)])


def test_no_shrinking_while_tasks_wait(clock):
    scaler = Autoscaler(0, 5, idle_timeout=1.0, clock=clock)
    assert not scaler.decide(1, 0.1, [idle(0, clock.now - 50)])


def test_grows_under_load_then_shrinks_when_idle(clock):
    scaler = Autoscaler(1, 4, scale_up_after=0.5, idle_timeout=5, cooldown=2, clock=clock)
    workers = [busy(0)]
    for _ in range(10):  # a burst: the pool grows step by step
        decision = scaler.decide(20, 1.0, workers)
        workers += [busy(len(workers)) for _ in range(decision.add)]
        clock.now += 1
    assert len(workers) == 4
    workers = [idle(i, clock.now) for i in range(4)]  # the burst is over
    clock.now += 6
    decision = scaler.decide(0, 0.0, workers)
    assert sorted(decision.remove) == ["w0", "w1", "w2"]
    assert [e["action"] for e in scaler.events] == ["add", "remove"]


def test_above_maximum_retires_idle_workers(clock):
    scaler = Autoscaler(1, 2, clock=clock)
    decision = scaler.decide(0, 0.0, [busy(0), idle(1, clock.now), idle(2, clock.now - 1)])
    assert decision.remove == ["w2"]


def test_event_log_is_bounded(clock):
    scaler = Autoscaler(1, 2, cooldown=0, clock=clock, max_events=3)
    for _ in range(5):
        scaler.decide(0, 0.0, [])
    assert len(scaler.events) == 3


@pytest.mark.parametrize("args", [(3, 2), (0, 0), (-1, 2)])
def test_invalid_bounds(args):
    with pytest.raises(ValueError):
        Autoscaler(*args)
    with pytest.raises(ValueError):
        Autoscaler(1, 2, cooldown=-1)
