"""Pipe set instances as processes: find a pipe set by ``MODULE:NAME``, start instances of it,
stop them.

Technique: *a service is a process you can start anywhere*. An instance is
``python -m minipool pipe-set MODULE:NAME --connect URL`` (the command in
:mod:`.commands`), so the same line starts one on this machine or on another; ``serve()`` from
Python starts those processes for you. The shared key travels in the environment, never on a
command line that ``ps`` shows.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..cluster.session import shared_key
from .fragment import PipeSet

__all__ = ["load", "spec_of", "serve", "Served"]


def load(spec: str) -> PipeSet:
    """The pipe set ``spec`` names: ``package.module:NAME`` or ``path/to/file.py:NAME``.

    Raises:
        ValueError: ``spec`` is malformed, or names something that is not a PipeSet.
        ImportError: the module cannot be imported.
    """
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not MODULE:NAME (a module or a .py file, and a pipe set in it)")
    if module_name.endswith(".py"):
        path = Path(module_name)
        where = importlib.util.spec_from_file_location(f"minipool_pipe_set_{path.stem}", path)
        if where is None or where.loader is None or not path.exists():
            raise ImportError(f"no Python file {module_name}")
        module = importlib.util.module_from_spec(where)
        sys.modules[where.name] = module
        where.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    found = getattr(module, attribute, None)
    if not isinstance(found, PipeSet):
        raise ValueError(f"{spec}: {attribute} is not a PipeSet (found {type(found).__name__})")
    return found


def spec_of(pipe_set: PipeSet) -> str:
    """The ``MODULE:NAME`` an instance process loads ``pipe_set`` by.

    Raises:
        ValueError: no imported module holds it at top level.
    """
    for name, module in list(sys.modules.items()):
        for attribute, value in list(vars(module).items()) if module is not None else ():
            if value is pipe_set:
                if name == "__main__":
                    return f"{getattr(module, '__file__', '')}:{attribute}"
                return f"{name}:{attribute}"
    raise ValueError(f"pipe set {pipe_set.name!r} must be a top-level name of a module to be served")


def serve(pipe_set: PipeSet, address: str, *, instances: int = 1, **options: Any) -> Served:
    """Start ``instances`` processes serving ``pipe_set`` (a top-level name of an importable
    module or of the running script) for the coordinator at ``address``. ``options`` are the
    command's: ``slowdown=``, ``ttl=``, ``max_records=``; ``authkey=`` (or
    ``MINIPOOL_AUTHKEY``) travels in the environment.

    Raises:
        ValueError: ``pipe_set`` is not a top-level name of a module, or there is no key.
    """
    return Served(pipe_set, address, instances, options)


class Served:
    """Instance processes of one pipe set; ``stop()`` ends them (each leaves its group and the
    registry cleanly), ``kill(i)`` kills one with SIGKILL (an experiment in failure)."""

    def __init__(self, pipe_set: PipeSet, address: str, instances: int, options: dict[str, Any]) -> None:
        key = shared_key(options.pop("authkey", None))
        if not key:
            raise ValueError("serving a pipe set needs authkey= or MINIPOOL_AUTHKEY")
        env = {**os.environ, "MINIPOOL_AUTHKEY": os.fsdecode(key)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
        self.command = [sys.executable, "-m", "minipool", "pipe-set", spec_of(pipe_set), "--connect", address]
        for option, value in options.items():
            self.command += [f"--{option.replace('_', '-')}", str(value)]
        self.processes = [subprocess.Popen(self.command, env=env) for _ in range(instances)]

    def kill(self, index: int) -> None:
        self.processes[index].send_signal(signal.SIGKILL)
        self.processes[index].wait()

    def stop(self, timeout: float = 15.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
