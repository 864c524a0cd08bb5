"""Pipe sets: pipeline fragments served by processes on any machine, joined by exchange
channels (topics) held by the coordinator, seed 001's pipeline service framework.

Technique: *the pipeline as services*. Inside one process a pipeline's stages are threads joined
by queues (:mod:`minipool.pipeline`); here each pipe set is a consumer group of instance
processes, its channels are topics on the coordinator (the paper's global pipe centre), and
its instances are found in the coordinator's registry under the pipe set's service ID.
docs/pipesets.md teaches it; the modules, in reading order:

* :mod:`.fragment` -- PipeSet (what runs, from which channel, to which) and ``to_channel``;
* :mod:`.instance` -- one instance: pull, run, push, acknowledge; registered while alive;
* :mod:`.serving` -- ``MODULE:NAME`` specs and instance processes;
* :mod:`.commands` -- ``python -m minipool pipe-set``.
"""

from __future__ import annotations

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
]
