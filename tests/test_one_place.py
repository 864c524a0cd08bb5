"""Concerns that live in one place: the reconnect backoff, the shared key, the moving average,
the coordinator's outgoing messages (the scheduler decides, the broker encodes, heartbeats and
refusals included), and the read loop with heartbeats that the client and the worker share."""

from __future__ import annotations

import random
import time

import pytest

from minipool.cluster.balance import Ewma, ewma_step
from minipool.cluster.session import AUTHKEY_ENV, Backoff, shared_key
from minipool.cluster.state import Task, WorkerState


def test_backoff_doubles_to_its_cap_with_jitter_and_starts_over_after_a_success():
    backoff = Backoff(0.1, 0.5)
    waits = [backoff.next() for _ in range(6)]
    steps = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert all(0.5 * step <= wait <= 1.5 * step for wait, step in zip(waits, steps, strict=True))
    assert len(set(waits)) == len(waits)  # jittered: no two peers wait alike
    backoff.reset()
    assert 0.05 <= backoff.next() <= 0.15


def test_backoff_leaves_the_applications_random_sequence_alone():
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    Backoff(0.1, 0.5).next()  # a reconnect, perhaps in a background thread
    assert [random.random() for _ in range(3)] == expected


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

    from minipool.commandline import authkey
    from minipool.pool import authkey_from_env
    from minipool.rpc.calls import required_key

    monkeypatch.setenv(AUTHKEY_ENV, "k")
    assert authkey_from_env() == required_key(None) == authkey(argparse.Namespace(authkey_file=None)) == b"k"


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


class _Outbox:
    """What the broker writes to, recorded: ``put`` (messages) and ``try_put`` (heartbeats)."""

    def __init__(self):
        self.sent, self.tried = [], []

    def put(self, data, flush=True):
        self.sent.append(data)

    def try_put(self, data):
        self.tried.append(data)


class _Link:
    peer = "test"

    def __init__(self):
        self.outbox = _Outbox()

    def close(self):
        pass


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

    worker.link = _Link()
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


def test_heartbeats_and_refusals_are_encoded_where_every_other_message_is():
    import ast
    from pathlib import Path

    from minipool.cluster.broker import Broker
    from minipool.cluster.effects import Effects
    from minipool.wire import Kind, decode

    class Connection:
        def __init__(self, broken=False):
            self.sent, self.closed, self.broken = [], False, broken

        def send(self, data):
            if self.broken:
                raise OSError("gone")
            self.sent.append(data)

        def close(self):
            self.closed = True

    worker = WorkerState(_Link(), "w", 1, 0, {})
    refused, gone = Connection(), Connection(broken=True)
    fx = Effects()
    fx.heartbeat(worker)
    fx.refuse(refused, "wrong key", authentication=True)
    fx.refuse(gone, "too late")
    assert fx  # heartbeats and refusals alone are something to do
    Broker().apply(fx)
    assert [decode(data).kind for data in worker.link.outbox.tried] == [Kind.HEARTBEAT]
    [error] = [decode(data) for data in refused.sent]
    assert (error.kind, error.headers, refused.closed) == (
        Kind.ERROR,
        {"reason": "wrong key", "auth": True},
        True,
    )
    assert gone.closed  # a peer already gone is still closed

    # ... and the coordinator's I/O around the broker encodes nothing itself.
    source = Path(__file__).resolve().parent.parent / "minipool" / "cluster" / "coordinator.py"
    imported = {
        alias.name
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("wire")
        for alias in node.names
    }
    assert imported and not imported & {
        "encode",
        "encode_parts",
        "encode_buffers",
        "encode_gathered",
        "refusal",
    }


class _Scripted:
    """A connection that plays a script: bytes are received, TimeoutError waits out the timeout
    and raises it, and the end of the script is a closed connection."""

    closed = False

    def __init__(self, *script):
        self.script, self.timeouts, self.sent = list(script), [], []

    def recv(self, timeout=None):
        from minipool.errors import ConnectionClosed

        self.timeouts.append(timeout)
        if not self.script:
            raise ConnectionClosed("the end")
        item = self.script.pop(0)
        if item is TimeoutError:
            time.sleep(timeout or 0.0)
            raise TimeoutError
        return item

    def send_many(self, items):
        self.sent += items

    def close(self):
        self.closed = True


def _peer(heartbeat, liveness):
    import types

    return types.SimpleNamespace(
        url="tcp://coordinator", heartbeat=heartbeat, liveness=liveness, max_message=1
    )


def test_the_client_and_the_worker_read_with_the_one_loop():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "minipool"
    for path, function in (("client.py", "_read_until_lost"), ("cluster/worker.py", "_serve")):
        [body] = [
            node
            for node in ast.walk(ast.parse((root / path).read_text()))
            if isinstance(node, ast.FunctionDef) and node.name == function
        ]
        called = {
            n.func.id for n in ast.walk(body) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert "read_until_lost" in called, path


def test_the_read_loop_adopts_the_announcement_beats_when_quiet_and_stops_at_an_error():
    from minipool.cluster.outbox import Outbox
    from minipool.cluster.session import Lost, read_until_lost
    from minipool.wire import Kind, Message, decode, encode

    announce = encode(
        Message(Kind.HEARTBEAT, headers={"interval": 0.02, "liveness": 500, "max_message": 4096})
    )
    result = encode(Message(Kind.RESULT, 7, b"x"))
    error = encode(Message(Kind.ERROR, headers={"reason": "closing"}))
    conn = _Scripted(announce, TimeoutError, result, error)
    peer, handled = _peer(1.0, 3), []
    lost = read_until_lost(peer, conn, Outbox(conn), handled.append, beats=True)
    assert (peer.heartbeat, peer.liveness, peer.max_message) == (0.02, 500, 4096)
    assert [(m.kind, m.id) for m in handled] == [(Kind.HEARTBEAT, 0), (Kind.RESULT, 7)]  # not the ERROR
    assert [decode(data).kind for data in conn.sent] == [Kind.HEARTBEAT]  # the quiet interval's beat
    assert conn.timeouts[1] == 0.02  # it waits one (adopted) heartbeat at a time
    assert isinstance(lost, Lost) and "closing" in str(lost) and not lost.closed


def test_the_read_loop_gives_up_after_liveness_silent_heartbeats():
    from minipool.cluster.outbox import Outbox
    from minipool.cluster.session import Lost, read_until_lost
    from minipool.wire import Kind, decode

    conn = _Scripted(*[TimeoutError] * 10)
    started = time.monotonic()
    lost = read_until_lost(_peer(0.01, 3), conn, Outbox(conn), lambda m: None, beats=True)
    assert isinstance(lost, Lost) and "stopped answering" in str(lost)
    assert time.monotonic() - started >= 0.03  # three silent heartbeats, however long each took
    assert set(conn.timeouts) == {0.01} and len(conn.timeouts) < 10  # one beat at a time
    assert len(conn.sent) == len(conn.timeouts) - 1  # a HEARTBEAT after each silent one but the last
    assert {decode(d).kind for d in conn.sent} <= {Kind.HEARTBEAT}


def test_the_read_loop_polls_while_results_are_held_then_waits_out_the_silence():
    from minipool.cluster.outbox import Outbox
    from minipool.cluster.session import Lost, read_until_lost
    from minipool.errors import ProtocolError
    from minipool.wire import Kind, Message, encode

    conn = _Scripted(TimeoutError, TimeoutError)
    outbox = Outbox(conn)
    outbox.put(b"held result", flush=False)
    lost = read_until_lost(_peer(0.01, 2), conn, outbox, lambda m: None, beats=False, poll_held=True)
    assert conn.timeouts == [0.0, 0.02]  # a poll, then the whole silence in one wait (no beats sent here)
    assert conn.sent == [b"held result"]  # flushed once nothing more was waiting
    assert isinstance(lost, Lost) and not lost.closed

    closed = read_until_lost(_peer(1.0, 3), _Scripted(), Outbox(_Scripted()), lambda m: None, beats=False)
    assert isinstance(closed, Lost) and closed.closed

    def refuse(message):
        raise ProtocolError("not for me")

    task = encode(Message(Kind.TASK, 1, b""))
    wrong = read_until_lost(_peer(1.0, 3), _Scripted(task), Outbox(_Scripted()), refuse, beats=False)
    assert isinstance(wrong, ProtocolError) and str(wrong) == "not for me"


def test_an_outbox_being_sent_by_another_thread_has_nothing_for_a_reader_to_flush():
    """A reader polls while messages are held back with no one sending them; while another
    thread sends, that thread takes them along, so the reader may block (its polls would only
    take the GIL from the sender)."""
    import threading

    from minipool.cluster.outbox import Outbox

    release, sent = threading.Event(), []

    class Conn:
        closed = False

        def send_many(self, batch):
            release.wait(10)
            sent.extend(batch)

    outbox = Outbox(Conn())
    outbox.put(b"held", flush=False)
    assert outbox.has_pending  # held back, and nobody sending: a reader should flush it
    sender = threading.Thread(target=outbox.put, args=(b"first",))
    sender.start()
    deadline = time.monotonic() + 10
    while not sent and outbox.has_pending and time.monotonic() < deadline:
        time.sleep(0.001)
    outbox.put(b"later", flush=False)
    assert not outbox.has_pending  # the sender is in send_many: it will take "later" along
    release.set()
    sender.join(10)
    assert sent == [b"held", b"first", b"later"] and not outbox.has_pending
