"""One plug-in registry serves codecs and transports: lazy entries, entry points, clear errors."""

from __future__ import annotations

import importlib.metadata
import types

import pytest

from minipool import codecs
from minipool.errors import CodecError, MissingExtra, TransportError
from minipool.plugins import Plugins
from minipool.transports import base


class _EntryPoint:
    def __init__(self, name: str, obj: object) -> None:
        self.name, self.value, self._obj, self.loads = name, f"fake:{name}", obj, 0

    def load(self) -> object:
        self.loads += 1
        return self._obj


def _adopt(things: Plugins[str], ep: _EntryPoint) -> None:
    if ep.name not in things:  # as both codecs and transports do: built-in names win
        things.add_lazy(ep.name, ep.load)


def _registry() -> Plugins[str]:
    return Plugins(
        "thing",
        "minipool.test-things",
        lambda name, known: LookupError(f"no thing {name!r} (known: {known})"),
        _adopt,
    )


def test_codecs_and_transports_share_one_registry_type():
    assert isinstance(codecs.CODECS, Plugins) and isinstance(base.TRANSPORTS, Plugins)
    assert base.available_transports() == base.TRANSPORTS.names()
    assert codecs.available_codecs() == codecs.CODECS.usable()


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(CodecError, match=r"unknown codec 'nope' \(known: bz2, deflate, gzip, lzma, none"):
        codecs.get_codec("nope")
    with pytest.raises(TransportError, match=r"no transport for nope:// URLs \(known: .*ws, wss, zmq\+tcp"):
        base.connect("nope://127.0.0.1:1")


def test_a_lazy_entry_is_built_once_and_a_missing_extra_is_not_kept():
    things = _registry()
    attempts: list[str] = []

    def needs_extra() -> str:
        attempts.append("tried")
        if len(attempts) == 1:
            raise MissingExtra("the thing", "thing", "thingpkg")
        return "built"

    things.add_lazy("t", needs_extra)
    with pytest.raises(MissingExtra, match=r"minipool\[thing\]"):
        things.get("t")
    assert things.usable() == ["t"]  # the package "arrived": the second try builds it
    assert things.get("t") == "built" and things.get("t") == "built" and len(attempts) == 2


def test_entry_points_are_read_once_and_do_not_shadow_registered_names(monkeypatch):
    eps = [_EntryPoint("extra", "from a plug-in"), _EntryPoint("own", "shadowed")]
    reads: list[str] = []
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda *, group: reads.append(group) or eps)
    things = _registry()
    things.add("own", "registered")
    assert things.get("own") == "registered" and reads == []  # a known name reads nothing
    assert things.get("extra") == "from a plug-in"
    assert things.get("own") == "registered" and eps[1].loads == 0
    with pytest.raises(LookupError, match=r"known: extra, own"):
        things.get("missing")
    assert reads == ["minipool.test-things"]


def test_replace_rules_and_copies():
    things = _registry()
    things.add("a", "one")
    with pytest.raises(ValueError, match="a thing named 'a' is already registered"):
        things.add("a", "two", replace=False)
    copy = things.copy()
    copy.add("a", "two")
    assert things.get("a") == "one" and copy.get("a") == "two"


def test_a_transport_registered_by_module_name_is_imported_on_first_use(monkeypatch):
    monkeypatch.setattr(base, "TRANSPORTS", base.TRANSPORTS.copy())
    module = types.ModuleType("minipool_test_transport")
    module.connect = lambda url, options: ("connected", url.port)  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "minipool_test_transport", module)
    base.register_transport("Fake", "minipool_test_transport")
    assert "fake" in base.available_transports()
    assert base.connect("fake://127.0.0.1:9") == ("connected", 9)
