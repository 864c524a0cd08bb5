"""The service registry, driven by a fake clock."""

from __future__ import annotations

import json

import pytest

from minipool.cluster.registry import Registry


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(clock):
    return Registry(clock=clock)


def test_register_lookup_and_json(registry, clock):
    entry = registry.register(
        "w1", address="tcp://a:1", services=["square", "cube"], slots=4, meta={"pid": 7}, ttl=3
    )
    registry.register("w2", address="tcp://b:1", services=["cube"], slots=2, ttl=3)
    assert (entry.registered_at, entry.expires_at, entry.ttl) == (100.0, 103.0, 3)
    assert [e.key for e in registry.lookup("cube")] == ["w1", "w2"]
    assert [e.key for e in registry.lookup("square")] == ["w1"]
    assert registry.lookup("nothing") == []
    assert registry.get("w1") == entry and "w1" in registry and len(registry) == 2
    clock.now = 101.5
    data = json.loads(json.dumps(registry.to_json()))
    assert data[0] == {
        "key": "w1",
        "address": "tcp://a:1",
        "services": ["square", "cube"],
        "slots": 4,
        "meta": {"pid": 7},
        "registered_at": 100.0,
        "expires_at": 103.0,
        "ttl": 3,
        "expires_in": 1.5,
    }
    assert "expires_in" not in entry.to_json()


def test_entries_expire_unless_renewed(registry, clock):
    registry.register("w1", address="a", services=["s"], ttl=2)
    registry.register("w2", address="b", services=["s"], ttl=2)
    clock.now += 1.5
    assert registry.renew("w1") is True
    clock.now += 1.0  # w2 is past its deadline, w1 renewed to 103.5
    assert [e.key for e in registry.lookup("s")] == ["w1"]  # hidden before the sweep
    assert registry.get("w2") is None and "w2" not in registry
    gone = registry.expire()
    assert [e.key for e in gone] == ["w2"]
    assert registry.expire() == []  # each expiry is reported once
    assert [e.key for e in registry.entries()] == ["w1"]
    assert registry.renew("w2") is False  # too late: must register again
    clock.now = 103.5  # exactly at the deadline counts as expired
    assert registry.renew("w1") is False
    assert [e.key for e in registry.expire()] == ["w1"]


def test_renew_with_a_new_ttl_sticks(registry, clock):
    registry.register("w", address="a", ttl=1)
    assert registry.renew("w", ttl=10)
    clock.now += 5
    assert registry.renew("w")  # the new ttl of 10 is kept for later renewals
    assert registry.get("w").expires_at == clock.now + 10


def test_reregister_replaces_and_deregister_removes(registry, clock):
    registry.register("w", address="old", slots=1, ttl=1)
    clock.now += 0.5
    registry.register("w", address="new", slots=8, ttl=1)
    assert registry.get("w").address == "new" and registry.get("w").registered_at == 100.5
    assert registry.update("w", slots=3, meta={"busy": True}).slots == 3
    assert registry.deregister("w").address == "new"
    assert registry.deregister("w") is None
    assert registry.update("w", slots=1) is None
    assert registry.entries() == [] and registry.next_expiry() is None


def test_next_expiry_tells_when_to_sweep(registry):
    registry.register("a", address="a", ttl=5)
    registry.register("b", address="b", ttl=2)
    assert registry.next_expiry() == 102.0


@pytest.mark.parametrize("kwargs", [dict(ttl=0), dict(ttl=-1), dict(ttl=1, slots=-1)])
def test_invalid_registrations(registry, kwargs):
    with pytest.raises(ValueError):
        registry.register("w", address="a", **kwargs)
    with pytest.raises(ValueError, match="empty"):
        registry.register("", address="a", ttl=1)


def test_invalid_renew_ttl(registry):
    registry.register("w", address="a", ttl=1)
    with pytest.raises(ValueError):
        registry.renew("w", ttl=0)
