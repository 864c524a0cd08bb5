"""The minipool wire protocol: a message envelope and a mutual HMAC handshake, sans-I/O.

Technique: *message passing* (seed 000 §2.1) with a *sans-I/O protocol core*. Every function here
turns bytes into values or values into bytes; none touches a socket. The coordinator, workers and
clients wrap them in a thin loop over a :class:`~minipool.transports.base.Connection`, and the
tests (and a hypothesis fuzzer) drive them with plain bytes.

One transport message carries one :class:`Message`, laid out as (``docs/protocol.md`` has the
byte-by-byte specification)::

    0      2      3           7      8      9      10          14          22
    +------+------+-----------+------+------+------+-----------+-----------+-------+---------+------+
    | "MP" | ver  | crc32 u32 | kind | fmt  | clen | hlen u32  | id u64    | codec | headers | body |
    +------+------+-----------+------+------+------+-----------+-----------+-------+---------+------+

Why it is built this way:

* the fixed 22-byte head is decoded with one precompiled ``struct`` call: the hot path (a task
  and its result) carries no headers at all;
* every message carries a CRC-32 of all the bytes after it (the magic and version before it
  are checked by value), checked before anything else in it is believed. TCP's own 16-bit
  checksum lets a damaged segment through now and then, and a middlebox or a bad NIC can
  damage bytes after it was checked; a flipped bit in a pickled function is a wrong answer or
  a crashed interpreter. ``zlib.crc32`` runs at gigabytes a second and is chained over the
  parts, so nothing is joined for it. The body comes first in the chain: a receiver has the
  body's own CRC on the way to checking the message (:attr:`Message.body_crc`), and the
  coordinator, which forwards bodies unchanged in new envelopes, never reads a body twice;
* a large body is never copied by the envelope: :func:`encode_buffers` hands the head and the
  body to the transport as two buffers (``tcp://`` gathers them with one ``sendmsg``), and
  ``decode(data, view=True)`` cuts a large pickled body out of the received message as a
  ``memoryview`` (:data:`VIEW_MIN`), since a transport refills no message that anyone still
  holds (a view holds it). A 1 MB round trip then costs pickling, the kernel and the CRC, not two more copies
  at each end;
* the coordinator never decodes task bodies: it reads the head and forwards the body bytes
  untouched, so it needs no pickle, no codec work and no trust in what tasks contain;
* bodies say how they are serialized (``fmt``: raw, JSON or pickle) and compressed (``codec``,
  by name, so any registered codec works). Pickle is refused by :func:`decode_body` unless the
  caller says the peer is authenticated: nothing is unpickled from a stranger;
* authentication is a mutual challenge-response on a shared key, as
  ``multiprocessing.connection`` does, but in both directions: each side proves it holds the
  key by returning the HMAC-SHA256 of a fresh random nonce chosen by the other, so a recorded
  exchange cannot be replayed and a fake coordinator cannot harvest tasks.

The package: :mod:`~minipool.wire.envelope` (a message as bytes) and
:mod:`~minipool.wire.handshake` (proving the key both ways).
"""

from __future__ import annotations

from .envelope import (
    HEAD_SIZE,
    HEADROOM,
    MAGIC,
    MAX_HEADERS,
    VERSION,
    VIEW_MIN,
    Buffer,
    Format,
    Kind,
    Message,
    decode,
    decode_body,
    encode,
    encode_body,
    encode_buffers,
    encode_gathered,
    encode_parts,
    envelope_size,
)
from .handshake import NONCE_SIZE, ClientAuth, ServerAuth, refusal

__all__ = [
    "VERSION",
    "Kind",
    "Format",
    "Message",
    "encode",
    "encode_parts",
    "encode_buffers",
    "encode_gathered",
    "decode",
    "encode_body",
    "decode_body",
    "ClientAuth",
    "ServerAuth",
    "NONCE_SIZE",
    "refusal",
    "envelope_size",
    "Buffer",
    "HEAD_SIZE",
    "HEADROOM",
    "MAGIC",
    "MAX_HEADERS",
    "VIEW_MIN",
]
