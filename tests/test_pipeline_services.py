"""Named services: instances share the load, weighted towards the fastest."""

from __future__ import annotations

import time

import pytest

from minipool import pipeline as pl


def fast(x):
    return x


def slow(x):
    time.sleep(0.01)
    return x


def test_dynamic_weights_send_less_to_a_slow_instance():
    with (pl.source(range(300)) | pl.service("echo", instances=[fast, fast, slow])).start() as run:
        assert sorted(run.result()) == list(range(300))
        fast1, fast2, slow_one = run.services["echo"]
    assert fast1.records + fast2.records + slow_one.records == 300
    assert slow_one.records < fast1.records and slow_one.records < fast2.records
    assert slow_one.weight < fast1.weight


def test_round_robin_splits_evenly():
    with (
        pl.source(range(300)) | pl.service("echo", instances=[fast, fast, slow], balance="round_robin")
    ).start() as run:
        assert sorted(run.result()) == list(range(300))
        assert [s.records for s in run.services["echo"]] == [100, 100, 100]


def test_service_failure_names_the_instance():
    def bad(x):
        raise RuntimeError("nope")

    with pytest.raises(pl.StageFailed, match=r"'parse#\d'.*nope"):
        (pl.source(range(10)) | pl.service("parse", bad, instances=2)).run()


def test_service_arguments():
    with pytest.raises(pl.PipelineError):
        pl.service("x", instances=2)
    with pytest.raises(pl.PipelineError):
        pl.service("x", fast, balance="random")
    with pytest.raises(pl.PipelineError):
        pl.service("x", instances=[])


def test_a_bool_is_not_a_count_of_instances():
    with pytest.raises(pl.PipelineError, match="instances must be a count"):
        pl.service("x", fast, instances=True)
