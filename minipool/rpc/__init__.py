"""Remote objects: a Pyro4-style daemon, proxies, and names kept by the coordinator.

Technique: *remote method invocation* (seed 002's Pyro4 and RPyC; seed 000 §2.1's message
passing versus RPC). A :class:`Daemon` serves objects; a :class:`Proxy` stands in for one of
them in another process, and calling ``proxy.method(*args)`` runs ``method`` on the real object
and returns its result -- or raises its exception -- as if it were local. The pool's tasks are
*message passing*: a function and its arguments travel to wherever a worker is free, and the
worker keeps nothing. An RPC call goes to *one particular object*, which keeps its state
between calls: a counter, a cache, a connection, the next link of a chain.

How the pieces map onto Pyro4's::

    Pyro4.Daemon()                      ->  Daemon("tcp://127.0.0.1:0", authkey=key)
    daemon.register(obj)                ->  daemon.register(obj, "name")  # returns a URI
    python -m Pyro4.naming              ->  python -m minipool coordinator
    ns.register("server", uri)          ->  Daemon(..., name_server=url) registers every name
    Pyro4.Proxy("PYRONAME:server")      ->  Proxy("name:server", name_server=url, authkey=key)
    Pyro4.Proxy("PYRO:obj@host:port")   ->  Proxy("tcp://host:port#obj", authkey=key)
    daemon.requestLoop()                ->  daemon.serve_forever()  (or start(): a thread)
    @Pyro4.expose                       ->  @expose

Why it is built this way:

* it is the pool's own wire format and handshake, not a new protocol: a call is a SUBMIT whose
  body is the pickled ``(object name, method, args, kwargs)`` (no JSON headers: they cost more
  than the rest of a small call's encoding); the answer is a RESULT or a FAILURE carrying the
  exception and the remote traceback (the same encoding as a task's outcome,
  :mod:`minipool.task`). Every transport works, and nothing is unpickled before the mutual HMAC
  handshake has passed;
* the name server is the coordinator's service registry (Consul-style entries with a
  time-to-live, :mod:`minipool.cluster.registry`): a daemon registers each name as service
  ``rpc:<name>`` and renews it, so the name of a daemon that died simply expires;
* only what is marked with :func:`expose` can be called, never a name that starts with ``_``:
  a proxy must not reach ``__class__`` or ``__reduce__`` of the object behind it;
* a large ``bytes`` argument or result is never copied on its way out: it is pickled in parts
  (:func:`~minipool.rpc.calls.gathered`: the pickler writes a large bytes object as itself),
  the CRC is chained over the parts and the transport gathers them with one ``sendmsg``; on
  the way in the body is a view into the received message (:data:`minipool.wire.VIEW_MIN`).
  Small calls keep the plain pickler, which is cheaper for them;
* one thread per connection, as Pyro4's threaded server: calls on one proxy run in order, and a
  call may call other remote objects -- even, through another connection, its own daemon (the
  seed's chain of three servers in a ring). A shared object must be thread-safe, as in Pyro4.

The package, a module per side: :mod:`~minipool.rpc.calls` (what a proxy may reach, a large
call's parts), :mod:`~minipool.rpc.daemon` (the server), :mod:`~minipool.rpc.names` (names in
the coordinator's registry), :mod:`~minipool.rpc.proxy` (the client).
"""

from __future__ import annotations

from .calls import expose
from .daemon import Daemon
from .names import NAME_TTL, locate
from .proxy import Proxy

__all__ = ["expose", "Daemon", "Proxy", "locate", "NAME_TTL"]
