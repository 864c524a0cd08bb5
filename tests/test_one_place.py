"""Concerns that live in one place: the reconnect backoff, the shared key, the moving average,
and the coordinator's outgoing messages (the scheduler decides, the broker encodes)."""

from __future__ import annotations

import random

import pytest

from minipool.cluster.balance import Ewma, ewma_step
from minipool.cluster.session import AUTHKEY_ENV, Backoff, shared_key
from minipool.cluster.state import Task, WorkerState


def test_backoff_doubles_to_its_cap_with_jitter_and_starts_over_after_a_success():
    random.seed(7)
    backoff = Backoff(0.1, 0.5)
    waits = [backoff.next() for _ in range(6)]
    steps = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert all(0.5 * step <= wait <= 1.5 * step for wait, step in zip(waits, steps, strict=True))
    assert len(set(waits)) == len(waits)  # jittered: no two peers wait alike
    backoff.reset()
    assert 0.05 <= backoff.next() <= 0.15


def test_the_shared_key_comes_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.setenv(AUTHKEY_ENV, "from-env")
    assert shared_key("text") == b"text"
    assert shared_key(b"bytes") == b"bytes"
    assert shared_key(None) == b"from-env"
    assert shared_key("") == b"from-env"
    assert shared_key(None, env=False) == b""
    monkeypatch.delenv(AUTHKEY_ENV)
    assert shared_key(None) == b""


def test_the_pool_the_rpc_and_the_command_line_read_the_key_alike(monkeypatch):
    import argparse

    from minipool import rpc
    from minipool.commandline import authkey
    from minipool.pool import authkey_from_env

    monkeypatch.setenv(AUTHKEY_ENV, "k")
    assert authkey_from_env() == rpc._key(None) == authkey(argparse.Namespace(authkey_file=None)) == b"k"


def test_the_worker_run_time_average_is_the_balancers_ewma():
    worker = WorkerState(None, "w", 1, None, {})
    average = Ewma(alpha=0.2)
    now = 0.0
    for sample in (0.5, 0.1, 0.3):  # a busy worker: each task's time is the gap between results
        task = Task(1, "c", 1, b"", 0, "none")
        worker.lease(task)
        task.leased_at = 0.0
        now += sample
        worker.finish(1, now)
        assert worker.avg_run == pytest.approx(average.update(sample))
    assert ewma_step(None, 2, 0.5) == 2.0 and ewma_step(2.0, 4.0, 0.5) == 3.0


def test_the_scheduler_decides_and_the_broker_encodes():
    from minipool.cluster.broker import Broker
    from minipool.cluster.scheduler import Effects, Scheduler
    from minipool.cluster.state import LocalClientState, Outcome
    from minipool.wire import Format, Kind, decode

    scheduler = Scheduler()
    worker = WorkerState(None, "w", 1, 0, {})
    scheduler.worker_joined(worker, Effects())
    fx = Effects()
    scheduler.submit("c", 7, b"body", Format.PICKLE, "none", {"timeout": 2.0}, fx)
    [(to, task, urgent)] = fx.sends
    assert (to, task.client_number, task.body, urgent) == (worker, 7, b"body", True)  # no bytes yet

    class Outbox:
        def __init__(self):
            self.sent = []

        def put(self, data, flush=True):
            self.sent.append(data)

    class Link:
        peer = "test"

        def __init__(self):
            self.outbox = Outbox()

        def close(self):
            pass

    worker.link = Link()
    resolved = []
    client = LocalClientState("c", lambda message: None, lambda *outcome: resolved.append(outcome))
    fx.deliver(client, 7, Outcome(Kind.RESULT, Format.PICKLE, "none", b"value"))
    Broker().apply(fx)
    message = decode(worker.link.outbox.sent[0])
    assert (message.kind, message.id, message.body, message.headers) == (
        Kind.TASK,
        task.number,
        b"body",
        {"timeout": 2.0},
    )
    assert resolved == [(7, Kind.RESULT, Format.PICKLE, "none", b"value")]  # the fast path: no message


def test_a_held_back_task_goes_at_once_if_its_worker_went_idle_before_it_was_sent():
    # A TASK leased to a busy worker is held back for the worker's reader to flush before it
    # blocks. If that worker's last result is handled between the lease and the send, the reader
    # may already be blocked, with the worker idle: the task must leave anyway (it used to wait
    # for the next heartbeat, a second later).
    from minipool.cluster.broker import Broker
    from minipool.cluster.scheduler import Effects, Scheduler
    from minipool.cluster.state import Outcome
    from minipool.wire import Format, Kind

    class Outbox:
        def __init__(self):
            self.held, self.sent = [], []

        def put(self, data, flush=True):
            self.held.append(data)
            if flush:
                self.flush()

        def flush(self):
            self.sent += self.held
            self.held = []

    class Link:
        peer = "test"

        def __init__(self):
            self.outbox = Outbox()

        def close(self):
            pass

    scheduler = Scheduler()
    worker = WorkerState(Link(), "w", 1, 1, {})  # one slot, one task of prefetch
    scheduler.worker_joined(worker, Effects())
    first = Effects()
    scheduler.submit("c", 1, b"one", Format.PICKLE, "none", None, first)
    Broker().apply(first)
    second = Effects()
    scheduler.submit("c", 2, b"two", Format.PICKLE, "none", None, second)
    [(_, task, urgent)] = second.sends
    assert not urgent  # the worker is busy with the first: the second would wait there
    # The worker's result for the first task is handled before the second is sent.
    [number] = [n for n in worker.leases if n != task.number]
    scheduler.complete(worker, [(number, Outcome(Kind.RESULT, Format.PICKLE, "none", b"1"))], Effects())
    Broker().apply(second)
    assert len(worker.link.outbox.sent) == 2 and not worker.link.outbox.held
