"""Seed 002's Pyro4 examples on ``minipool.rpc``: a greeting server, then a chain of servers.

The seed runs ``python -m Pyro4.naming`` (the name server), a server that registers a
``Server`` object under the name ``server``, and a client that calls
``Pyro4.Proxy("PYRONAME:server").welcomeMessage(name)``. Then three servers, each a ``Chain``
object that knows the name of the next one, pass a message around a ring until it comes back
to the first: a call that calls a remote object that calls another.

Here the coordinator is the name server (its service registry keeps the names), and every
server is a process of its own with a :class:`minipool.rpc.Daemon`. The names expire if a
server dies. The script checks the chain's answer against the seed's and exits 0.

    python examples/remote_objects.py
    python examples/remote_objects.py --name LiLei --transport ws
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

from minipool import rpc
from minipool.cluster.coordinator import Coordinator


@rpc.expose
class Server:
    """The seed's greeting object."""

    def welcomeMessage(self, name: str) -> str:  # noqa: N802 -- the seed's name
        return "Hi welcome " + str(name)


@rpc.expose
class Chain:
    """The seed's ``chainTopology.Chain``: forward the message to the next server, unless this
    server has seen it already -- then the ring is closed."""

    def __init__(self, name: str, next_name: str, name_server: str) -> None:
        self.name, self.next_name, self.name_server = name, next_name, name_server
        self.next: rpc.Proxy | None = None

    def process(self, message: list[str]) -> list[str]:
        if self.next is None:
            self.next = rpc.Proxy("name:example.chain." + self.next_name, name_server=self.name_server)
        if self.name in message:
            print(f"  back at {self.name}; the chain is closed!", flush=True)
            return ["complete at " + self.name]
        print(f"  {self.name} forwarding the message to the object {self.next_name}", flush=True)
        message.append(self.name)
        result = self.next.process(message)
        result.insert(0, "passed on from " + self.name)
        return result


def serve(obj: object, name: str, transport: str, name_server: str, ready: mp.Event, stop: mp.Event) -> None:
    """One server process: a daemon holding one object, registered under ``name``."""
    with rpc.Daemon(f"{transport}://127.0.0.1:0", name_server=name_server) as daemon:
        uri = daemon.register(obj, name)
        print(f"  server {name!r} ready at {uri}", flush=True)
        daemon.start()
        ready.set()
        stop.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="LiLei", help="who the greeting server welcomes")
    parser.add_argument("--transport", default="tcp", choices=["tcp", "ws", "http", "zmq+tcp"])
    args = parser.parse_args(argv)
    os.environ.setdefault("MINIPOOL_AUTHKEY", os.urandom(16).hex())  # children inherit it
    key = os.environ["MINIPOOL_AUTHKEY"].encode()

    with Coordinator(key) as names:  # the name server: `python -m minipool coordinator`
        name_server = names.serve("tcp://127.0.0.1:0")
        print(f"name server (a coordinator) at {name_server}")
        servers = [(Server(), "server")]
        servers += [
            (Chain(this, nxt, name_server), f"example.chain.{this}")
            for this, nxt in (("1", "2"), ("2", "3"), ("3", "1"))
        ]
        stop = mp.Event()
        processes = []
        for obj, name in servers:
            ready = mp.Event()
            p = mp.Process(target=serve, args=(obj, name, args.transport, name_server, ready, stop))
            p.start()
            processes.append(p)
            if not ready.wait(30):
                print(f"server {name!r} did not start", file=sys.stderr)
                return 1
        try:
            greeting = rpc.Proxy("name:server", name_server=name_server).welcomeMessage(args.name)
            print(f"client: {greeting}")
            print("client: sending ['hello'] around the chain")
            result = rpc.Proxy("name:example.chain.1", name_server=name_server).process(["hello"])
            print(f"client: Result={result}")
        finally:
            stop.set()
            for p in processes:
                p.join(10)
    expected = ["passed on from 1", "passed on from 2", "passed on from 3", "complete at 1"]
    ok = greeting == f"Hi welcome {args.name}" and result == expected
    print(f"matches the seed's output: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
