"""Pipe sets: pipeline fragments served by processes on any machine, joined by exchange
channels (topics) held by the coordinator, seed 001's pipeline service framework.

Technique: *the pipeline as services*. Inside one process a pipeline's stages are threads joined
by queues (:mod:`minipool.pipeline`); here each pipe set is a consumer group of instance
processes, its channels are topics on the coordinator (the paper's global pipe centre), and
its instances are found in the coordinator's registry under the pipe set's service ID.
docs/pipesets.md teaches it; the modules, in reading order:

* :mod:`.fragment` -- PipeSet (what runs, from which channel, to which) and ``to_channel``;
* :mod:`.instance` -- one instance: pull, run, push, acknowledge; registered while alive;
* :mod:`.fast` -- fast pipes: an inlet served over rpc, an outlet that finds it;
* :mod:`.callback` -- a channel's results by iterator or callback (the callback layer);
* :mod:`.serving` -- ``MODULE:NAME`` specs and instance processes;
* :mod:`.commands` -- ``python -m minipool pipe-set``.

The names below are imported on first use (PEP 562), so that ``python -m minipool`` (which
imports :mod:`.commands` to add its subcommand) does not load the pipeline, rpc and topic
clients for every other command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .callback import outflow
    from .fragment import PipeSet, Routed, to_channel
    from .instance import REGISTRY_KIND, Instance, InstanceStats
    from .serving import Served, load, serve

__all__ = [
    "PipeSet",
    "Routed",
    "to_channel",
    "Instance",
    "InstanceStats",
    "REGISTRY_KIND",
    "Served",
    "load",
    "serve",
    "outflow",
]
_HOMES = {
    "PipeSet": "fragment",
    "Routed": "fragment",
    "to_channel": "fragment",
    "Instance": "instance",
    "InstanceStats": "instance",
    "REGISTRY_KIND": "instance",
    "Served": "serving",
    "load": "serving",
    "serve": "serving",
    "outflow": "callback",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
