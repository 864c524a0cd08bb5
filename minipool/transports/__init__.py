"""Pluggable transports: pick one with a URL scheme. See :mod:`minipool.transports.base`."""

from .base import (
    DEFAULT_MAX_MESSAGE,
    Connection,
    Listener,
    Options,
    available_transports,
    connect,
    listen,
    register_transport,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "Connection",
    "Listener",
    "Options",
    "available_transports",
    "connect",
    "listen",
    "register_transport",
]
