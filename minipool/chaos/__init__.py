"""``ChaosProxy``: a TCP proxy that injects the faults a real network produces.

Technique: *fault injection* (chaos engineering, as Toxiproxy does it for a network and
Netflix's Chaos Monkey for machines). ``docs/failures.md`` states what minipool promises when a
peer dies, freezes or goes silent, and most of its tests provoke the failure from inside a
process (SIGKILL, SIGSTOP, garbage bytes). A proxy provokes it from *between* the peers, where a
network fails: put one in front of a coordinator, point the workers at it, and cut, freeze, slow
down or corrupt their connections while the pool runs::

    worker --tcp--> ChaosProxy --tcp--> coordinator
                    (listen)            (target)

The faults, all off by default, set at construction and changed while it runs with
:meth:`ChaosProxy.set` (or from the command line, ``python -m minipool chaos``):

* ``delay`` and ``jitter``: each chunk is held ``delay + uniform(0, jitter)`` seconds, but never
  overtakes the chunk before it: TCP does not reorder bytes, so neither may the proxy;
* ``bandwidth``: bytes per second, per connection and direction; a chunk is held for as long as
  it takes to "cross the link";
* ``cut_rate`` and ``cut_after``: close both sides of a connection, with a probability per
  forwarded chunk or once it has carried that many bytes; :meth:`ChaosProxy.cut_all` drops every
  open connection at once (a partition blip, a restarted NAT box);
* :meth:`ChaosProxy.stall`: forward nothing but keep every connection open, for a while or until
  :meth:`ChaosProxy.resume`. No FIN, no RST, only silence: this is what a frozen machine or a
  silent partition looks like, and only heartbeats notice it;
* ``refuse``: accept new connections and close them at once: the service is down;
* ``corrupt_rate``: flip one bit of one byte in a forwarded chunk, with that probability. On a
  real network TCP's checksum catches almost all such errors before they reach a program; here
  they all do, which is what it takes to exercise a transport's parser. minipool has no
  per-message checksum after the handshake, so a flipped bit inside a task's or a result's body
  can also go unnoticed: ``docs/failures.md`` says what corruption tests can and cannot show.

Why it is built this way:

* **two threads per connection, one per direction** (a *pump*). Each blocks only on its own
  source and destination, so a peer that stops reading stalls one direction and never the
  other; one thread sending both ways with blocking sends could deadlock two peers that write
  at the same time.
* **held chunks are a queue of due times.** A pump waits in ``poll`` on its source with a timeout
  that ends when the oldest held chunk is due, so delays cost no timer thread per chunk, and a
  chunk's due time is never earlier than its predecessor's, so jitter cannot reorder bytes.
  Past ``HOLD_LIMIT`` held bytes a pump stops reading: TCP's flow control then slows the sender,
  as a slow link would.
* **faults only shut sockets down; the last pump out closes them.** A shut-down socket wakes
  every thread blocked on it, and its descriptor stays allocated, so no thread can ever poll a
  descriptor number that was closed and handed to a new connection.
* **one random generator per pump**, seeded with ``(seed, connection number, direction)``: with a
  ``seed``, each connection draws the same sequence of faults whatever the threads' timing.
  (Where TCP splits the stream into chunks still depends on timing.)

The package: :mod:`~minipool.chaos.faults` (what is injected, checked) and
:mod:`~minipool.chaos.proxy` (the proxy that injects it).
"""

from __future__ import annotations

from .faults import Faults, parse_address
from .proxy import ChaosProxy

__all__ = ["ChaosProxy", "Faults", "parse_address"]
