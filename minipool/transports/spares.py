"""Receive buffers for large messages, used again once nothing else holds them.

Technique: *buffer recycling guarded by reference counts*. A fresh megabyte is not free: the
allocator hands a large block back to the kernel when it is freed (glibc trims the top of its
heap, or unmaps the block), so the next one starts as untouched pages and the kernel faults
each 4 KiB page in and zeroes it while the message is copied into it -- on this project's
machine that cost more than the copy itself, and a 1 MB echo made about 500 such faults.
Receiving into a buffer that is already mapped costs only the copy. A connection opened with
``reuse_buffer=True`` (:class:`~minipool.transports.base.Options`; :mod:`minipool.rpc` sets
it) keeps one.

Why it is built this way:

* a received message is handed over as the buffer itself (no copy), and whoever reads it may
  keep it, or a ``memoryview`` into it (``wire.decode(view=True)`` does), for as long as they
  like. So the buffer is refilled only when its reference count says its slot is its only
  holder: a view, a slice's source, a message kept in a table all hold a reference, so a
  message can never change under whoever kept it. The count is compared with one measured on
  a probe the same way when the slot is made, not with a constant, since interpreters count
  references on the stack differently;
* one buffer per connection: while whoever read the last message still holds it (a reader's
  loop usually does: ``data = conn.recv()`` rebinds the name only after the call returns),
  the next large message is received as before, into a ``bytes`` object of its own that
  ``recv`` fills without zero-filling it first, and the one after it into the spare again;
* only up to :data:`LARGEST` bytes are kept, so an idle connection holds at most that much;
  larger messages are rare and are received into objects of their own;
* an option, not the rule: where the allocator hands fresh memory back is decided by the
  whole process, and a buffer that stays mapped moves that line. A pool worker, which keeps
  the received task while it unpickles, runs and pickles, faulted in more pages per task with
  a spare than without; an rpc client, which lets each reply go, none at all.
"""

from __future__ import annotations

import sys

__all__ = ["LARGEST", "SpareBuffer"]

LARGEST = 4 * 1024 * 1024


def _holders(slot: list[bytearray]) -> int:
    return sys.getrefcount(slot[0])


class SpareBuffer:
    """One buffer of at most ``largest`` bytes, handed out again whenever nobody holds it."""

    def __init__(self, largest: int = LARGEST) -> None:
        self._slot: list[bytearray] = []
        self.largest = largest
        self._unheld = _holders([bytearray(1)])  # a buffer that only its slot holds

    def take(self, size: int) -> bytearray | None:
        """A buffer of exactly ``size`` bytes (stale contents) that nobody else holds, or None:
        ``size`` is over :attr:`largest`, or whoever has the spare still holds it."""
        slot = self._slot
        if size > self.largest or (slot and _holders(slot) != self._unheld):
            return None
        if not slot:
            slot.append(bytearray(size))
        elif len(slot[0]) > size:
            del slot[0][size:]  # keeps its memory unless it shrinks by half or more
        elif len(slot[0]) < size:
            slot[0] += bytes(size - len(slot[0]))  # within the memory it has: no new pages
        return slot[0]
