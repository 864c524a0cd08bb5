"""Names for remote objects, kept in a coordinator's service registry.

Technique: *a name server with leases* (Pyro4's name server; Consul's TTL checks). A daemon
registers each name as service ``rpc:<name>`` in the coordinator's registry
(:mod:`minipool.cluster.registry`) and renews it at a third of its time-to-live, so the name of
a daemon that died simply expires; :func:`locate` looks a name up.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..client import RemoteClient
from ..errors import ConnectionClosed, MinipoolError
from .calls import required_key

__all__ = ["NAME_TTL", "NameKeeper", "locate"]

log = logging.getLogger("minipool.rpc")

#: Seconds a name lives in the registry without being renewed (the daemon renews it at a third).
NAME_TTL = 10.0
_RETIRE_WAIT = 5.0  # seconds a closing daemon waits for the coordinator to confirm it


class NameKeeper:
    """Keeps a daemon's names alive in a coordinator's registry: registers, renews, retires.

    Each name is registered under the key ``<uri>`` (unique to this daemon) offering the
    service ``rpc:<name>``, so two daemons serving one name never overwrite each other.
    """

    def __init__(self, url: str, key: bytes, options: dict[str, Any]) -> None:
        self._url, self._key, self._options = url, key, options
        self._client = RemoteClient(url, key, **options)
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()  # held while registering: remove() never races a renewal
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="minipool-rpc-names")
        self._renewer.start()

    def add(self, name: str, uri: str) -> None:
        with self._lock:
            self._names[name] = uri
            self._register(name, uri, NAME_TTL)
        # The coordinator handles one connection's messages in order: once this answer is
        # back, the name is in the registry, and a proxy may look it up from anywhere.
        self._client.lookup(f"rpc:{name}")

    def remove(self, name: str) -> None:
        with self._lock:
            uri = self._names.pop(name, None)
            if uri is not None:
                self._retire({name: uri})

    def _register(self, name: str, uri: str, ttl: float) -> None:
        self._client.register(uri, address=uri, services=[f"rpc:{name}"], ttl=ttl)

    def _retire(self, names: dict[str, str]) -> None:
        """Expire these names' entries, and return once the coordinator has done it.

        A REGISTER has no answer, and a lookup from another connection may be handled first
        (the coordinator serves each connection on its own thread): without the round trip,
        a name this daemon has just given up is still found, and a proxy reaches a closed
        daemon. A coordinator that cannot be reached is not waited for: the names then expire
        with their TTL.
        """
        if not names:
            return
        try:
            for uri in names.values():
                self._client.deregister(uri)
            # One round trip covers them all: a connection's messages are handled in order.
            self._client.lookup(f"rpc:{next(iter(names))}", timeout=_RETIRE_WAIT)
        except (MinipoolError, OSError, TimeoutError) as exc:
            log.warning(
                "rpc: cannot retire %s at %s (they expire in %gs): %s",
                ", ".join(names),
                self._url,
                NAME_TTL,
                exc,
            )

    def _renew(self) -> None:
        while not self._stop.wait(NAME_TTL / 3):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    try:
                        self._register_all()
                    except ConnectionClosed:  # the client is between attempts, or gave up
                        self._client.close()
                        self._client = RemoteClient(self._url, self._key, **self._options)
                        self._register_all()
                except (MinipoolError, OSError) as exc:  # the coordinator is away: next time
                    log.warning("rpc: cannot renew names at %s: %s", self._url, exc)

    def _register_all(self) -> None:
        for name, uri in self._names.items():
            self._register(name, uri, NAME_TTL)

    def close(self) -> None:
        self._stop.set()
        self._renewer.join(NAME_TTL)
        with self._lock:
            self._retire(self._names)
            self._names.clear()
        self._client.close()


def locate(
    name: str,
    *,
    name_server: str,
    authkey: bytes | str | None = None,
    timeout: float = 10.0,
    **transport_options: Any,
) -> str:
    """The URI registered for ``name`` at the coordinator ``name_server``.

    Raises:
        LookupError: no live entry has that name.
    """
    client = RemoteClient(
        name_server, required_key(authkey), timeout=timeout, reconnect_timeout=0, **transport_options
    )
    try:
        entries = client.lookup(f"rpc:{name}", timeout)
    finally:
        client.close()
    if not entries:
        raise LookupError(f"no object named {name!r} is registered at {name_server}")
    return str(entries[0]["address"])
