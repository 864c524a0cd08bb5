"""Balancing policies on synthetic candidates, and the dispatch simulation."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass

import pytest

from minipool.bench import balance as balance_bench
from minipool.cluster.balance import POLICIES, Ewma, Latency, get_policy
from minipool.cluster.simulate import WorkerSpec, simulate


@dataclass
class W:
    id: str
    slots: int = 2
    inflight: int = 0
    avg_run: float | None = None
    avg_pull: float | None = None


def test_get_policy_names_and_errors():
    for name in POLICIES:
        assert get_policy(name).name == name
    with pytest.raises(ValueError, match="least-loaded, round-robin, random, latency"):
        get_policy("fastest")


@pytest.mark.parametrize("name", list(POLICIES))
def test_no_candidates_means_no_choice(name):
    assert get_policy(name).choose([]) is None


def test_ewma():
    average = Ewma(alpha=0.5)
    assert average.value is None
    assert average.update(4) == 4.0
    assert average.update(2) == 3.0
    assert average.count == 2
    with pytest.raises(ValueError):
        Ewma(alpha=0)


def test_least_loaded_prefers_the_smallest_busy_share_then_most_free_slots():
    policy = get_policy("least-loaded")
    a, b, c = W("a", slots=2, inflight=1), W("b", slots=8, inflight=2), W("c", slots=4, inflight=1)
    assert policy.choose([a, b, c]) is b  # 25% busy beats 50%; b has 6 free vs c's 3
    assert policy.choose([W("x", 1, 0), W("y", 4, 0)]).id == "y"


def test_round_robin_takes_turns_and_stays_fair_when_the_set_changes():
    policy = get_policy("round-robin")
    a, b, c, d = W("a"), W("b"), W("c"), W("d")
    assert [policy.choose([a, b, c]).id for _ in range(6)] == list("abcabc")
    # b is full for a while: a and c keep alternating, and b is next once it returns.
    assert [policy.choose([a, c]).id for _ in range(2)] == ["a", "c"]
    assert policy.choose([a, b, c]).id == "b"
    # A newcomer goes first once, then joins the rotation.
    assert [policy.choose([a, b, c, d]).id for _ in range(5)] == list("dacbd")
    counts = Counter(policy.choose([c, a, d, b]).id for _ in range(400))
    assert set(counts.values()) == {100}


def test_round_robin_forgets_departed_workers():
    policy = get_policy("round-robin")
    for i in range(500):
        policy.choose([W(f"w{i}")])
    assert len(policy._served) < 100


def test_random_is_seeded_and_covers_everyone():
    workers = [W("a"), W("b"), W("c")]
    first = [get_policy("random", rng=random.Random(7)).choose(workers).id for _ in range(1)]
    policy = get_policy("random", rng=random.Random(7))
    picks = [policy.choose(workers).id for _ in range(300)]
    assert picks[:1] == first
    assert set(Counter(picks)) == {"a", "b", "c"} and min(Counter(picks).values()) > 60


def test_latency_probes_unknown_workers_first():
    policy = get_policy("latency")
    fast = W("fast", avg_run=0.1)
    new = W("new")
    assert policy.choose([fast, new]) is new
    new.inflight = 1  # being measured: estimated with the known average, so not first
    assert policy.choose([fast, new]) is fast


def test_latency_weights_by_throughput_and_pull_time():
    policy = get_policy("latency")
    fast = W("fast", slots=2, inflight=1, avg_run=1.0)  # eta (1+1)*1/2 = 1.0
    slow = W("slow", slots=2, inflight=0, avg_run=5.0)  # eta 1*5/2 = 2.5
    assert policy.choose([slow, fast]) is fast
    fast.inflight = 5  # eta 3.0: now slow is sooner
    assert policy.choose([slow, fast]) is slow
    far = W("far", slots=2, avg_run=1.0, avg_pull=10.0)  # a slow link costs its pull time
    assert policy.choose([far, W("near", slots=2, inflight=1, avg_run=1.0)]).id == "near"


def test_latency_with_nothing_measured_is_least_loaded():
    policy = get_policy("latency")
    assert policy.choose([W("a", inflight=2), W("b", inflight=1)]).id == "b"


def test_latency_holds_a_task_back_rather_than_queue_it_behind_a_slow_worker():
    policy = Latency(memory=3)
    fast = W("fast", slots=2, inflight=0, avg_run=1.0)
    slow = W("slow", slots=2, inflight=2, avg_run=5.0)
    assert policy.choose([fast, slow]) is fast  # fast promises 0.5 + one more turn
    # fast is full now; slow could only queue it (eta 7.5): wait for fast instead.
    assert policy.choose([slow]) is None
    slow.inflight = 1  # slow has a free slot: never refused
    assert policy.choose([slow]) is slow
    slow.inflight = 2
    for _ in range(3):  # fast unseen too long: forgotten
        policy.choose([slow])
    assert policy.choose([slow]) is slow


def _makespans(name: str, prefetch: int, window: int | None) -> list[float]:
    workers = [WorkerSpec(f"f{i}", slots=2) for i in range(3)] + [WorkerSpec("s", 2, 0.2)]
    out = []
    for seed in range(9):
        rng = random.Random(seed)
        sizes = [rng.lognormvariate(0, 0.8) for _ in range(200)]
        policy = get_policy(name, rng=random.Random(seed))
        out.append(simulate(policy, workers, sizes, prefetch=prefetch, window=window).makespan)
    return out


def test_latency_beats_round_robin_by_half_with_one_worker_five_times_slower():
    rr = _makespans("round-robin", prefetch=4, window=16)
    latency = _makespans("latency", prefetch=4, window=16)
    assert statistics.median(r / lat for r, lat in zip(rr, latency, strict=True)) >= 1.5


def test_simulation_accounts_for_every_task_and_work_is_conserved():
    workers = [WorkerSpec("a", slots=1), WorkerSpec("b", slots=1, speed=0.5)]
    # Round-robin hands b the last task at t=2 although a would finish it a second sooner.
    result = simulate(get_policy("round-robin"), workers, [1.0] * 4, window=None)
    assert (result.tasks_per_worker, result.makespan) == ({"a": 2, "b": 2}, 4.0)
    result = simulate(get_policy("latency"), workers, [1.0] * 4, window=None)
    assert (result.tasks_per_worker, result.makespan) == ({"a": 3, "b": 1}, 3.0)
    single = simulate(get_policy("latency"), [WorkerSpec("a", 2)], [1.0, 1.0, 1.0, 1.0])
    assert single.makespan == 2.0 and single.mean_turnaround == 1.5
    with pytest.raises(ValueError):
        simulate(get_policy("random"), [], [1.0])
    with pytest.raises(ValueError):
        simulate(get_policy("random"), workers, [1.0], prefetch=0)


def test_bench_module_runs(capsys):
    parser = __import__("argparse").ArgumentParser()
    balance_bench.add_arguments(parser)
    results = balance_bench.run(parser.parse_args(["--tasks", "40", "--sets", "2"]))
    assert set(results["policies"]) == set(POLICIES)
    assert "round-robin" in capsys.readouterr().out


def test_a_lost_worker_no_longer_holds_tasks_back_under_latency():
    from minipool.cluster.scheduler import Effects, Scheduler
    from minipool.cluster.state import TaskState, WorkerState
    from minipool.wire import Format

    scheduler = Scheduler(balance="latency")

    def join(name, avg_run):
        worker = WorkerState(None, name, 1, None, {})  # one slot, room for one prefetched task
        worker.avg_run = avg_run
        scheduler.worker_joined(worker, Effects())
        return worker

    fast, faster, slow = join("fast", 0.1), join("faster", 0.05), join("slow", 2.0)
    numbers = iter(range(1, 1000))

    def submit(count):
        for _ in range(count):
            scheduler.submit("c", next(numbers), b"x", Format.PICKLE, "none", None, Effects())

    submit(2)  # one each on the two quick workers
    assert (len(fast.leases), len(faster.leases), len(slow.leases)) == (1, 1, 0)
    scheduler.worker_lost(faster, Effects())  # it promised the earliest finish, then died
    submit(20)
    # The slow worker is used (it is idle); the lost one's promise holds nothing back.
    assert len(slow.leases) >= 1 and len(fast.leases) == 2
    queued = sum(1 for t in scheduler.tasks.values() if t.state is TaskState.QUEUED)
    assert queued == 22 - len(fast.leases) - len(slow.leases)


def test_every_policy_forgets_and_says_whether_it_holds_back():
    for name in POLICIES:
        policy = get_policy(name)
        policy.forget("nobody")  # never an error
        assert policy.holds_back is (name == "latency")


def test_the_coordinator_measures_the_pull_time_that_latency_weighs():
    from minipool.cluster.balance import Ewma
    from minipool.cluster.state import EWMA_WEIGHT, Task, WorkerState

    def lease(worker, number, at):
        task = Task(number, "c", number, b"", 0, "none")
        worker.lease(task)
        task.leased_at = at

    # Two one-slot workers each run two 1 s tasks: "queued" is leased both at once, so the
    # second waits 1 s for the slot; "fresh" is leased the second as the first finishes.
    queued, fresh = WorkerState(None, "queued", 1, None, {}), WorkerState(None, "fresh", 1, None, {})
    lease(queued, 1, 0.0)
    lease(queued, 2, 0.0)
    queued.finish(1, 1.0)
    queued.finish(2, 2.0)
    lease(fresh, 1, 0.0)
    fresh.finish(1, 1.0)
    lease(fresh, 2, 1.0)
    fresh.finish(2, 2.0)
    pulls = Ewma(alpha=EWMA_WEIGHT)
    pulls.update(0.0)  # the first task found the slot free
    assert queued.avg_pull == pytest.approx(pulls.update(1.0))  # the second waited 1 s for it
    assert fresh.avg_pull == 0.0  # each task found the slot free
    assert queued.avg_run == pytest.approx(fresh.avg_run) == pytest.approx(1.0)
    # Alike in every other way, the worker whose tasks wait before they start is the later finish.
    assert get_policy("latency").choose([queued, fresh]) is fresh
