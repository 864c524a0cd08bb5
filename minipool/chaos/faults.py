"""The faults a :class:`~minipool.chaos.ChaosProxy` injects, as one immutable, checked value.

Technique: *configuration as a value*. A :class:`Faults` is frozen and checked when it is made,
so a bad value is refused before it reaches the traffic, and a running proxy changes its faults
by swapping one reference: each chunk reads the faults once and sees a consistent set, with no
lock between the proxy's controls and its pumps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["Faults", "changed_faults", "is_number", "parse_address"]


@dataclasses.dataclass(frozen=True)
class Faults:
    """What the proxy does to the traffic. Every field is off by default.

    Args:
        delay: seconds each chunk is held.
        jitter: up to this many seconds more, drawn uniformly per chunk.
        bandwidth: bytes per second per connection and direction (``None``: unlimited).
        cut_rate: probability that forwarding a chunk closes its connection instead.
        cut_after: bytes (both directions together) after which a connection is closed.
        corrupt_rate: probability that a chunk has one bit of one byte flipped.
        refuse: close new connections as soon as they are accepted.

    Raises:
        ValueError: a value out of range (a negative delay, a rate outside [0, 1], ...).
    """

    delay: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None
    cut_rate: float = 0.0
    cut_after: int | None = None
    corrupt_rate: float = 0.0
    refuse: bool = False

    def __post_init__(self) -> None:
        for name in ("delay", "jitter"):
            if not is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {getattr(self, name)!r}")
        for name in ("cut_rate", "corrupt_rate"):
            if not is_number(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], not {getattr(self, name)!r}")
        if self.bandwidth is not None and (not is_number(self.bandwidth) or self.bandwidth <= 0):
            raise ValueError(f"bandwidth must be bytes per second > 0 (or None), not {self.bandwidth!r}")
        if self.cut_after is not None and (
            isinstance(self.cut_after, bool) or not isinstance(self.cut_after, int) or self.cut_after < 0
        ):
            raise ValueError(f"cut_after must be a number of bytes >= 0 (or None), not {self.cut_after!r}")
        if not isinstance(self.refuse, bool):
            raise ValueError(f"refuse must be True or False, not {self.refuse!r}")

    def __str__(self) -> str:
        """Only the faults that are on: ``delay=0.05 cut_rate=0.01``, or ``no faults``."""
        on = [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return " ".join(on) or "no faults"


def is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number of seconds)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_address(address: str | tuple[str, int], *, any_port: bool = False) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) or a ``(host, port)`` pair, checked.

    Args:
        any_port: allow port 0 (a listening address: the OS picks a free port).

    Raises:
        ValueError: not of that form, or the port is out of range.
    """
    port_value: int | str
    if isinstance(address, tuple):
        host, port_value = address
    else:
        host, sep, port_value = str(address).rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected HOST:PORT, not {address!r}")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_value)
    except ValueError:
        raise ValueError(f"port must be a number in {address!r}") from None
    if not (0 if any_port else 1) <= port <= 65535:
        raise ValueError(f"port {port} out of range in {address!r}")
    return host, port


def changed_faults(current: Faults, changes: dict[str, Any]) -> Faults:
    """``current`` with ``changes`` applied, checked.

    Raises:
        TypeError: an unknown fault name. ValueError: a value out of range.
    """
    names = {f.name for f in dataclasses.fields(Faults)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"unknown fault {unknown[0]!r}; the faults are {', '.join(sorted(names))}")
    return dataclasses.replace(current, **changes)
