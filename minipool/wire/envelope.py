"""The message envelope: a fixed head, a CRC over everything after it, headers and a body.

See :mod:`minipool.wire` for the layout and why it is built this way; ``docs/protocol.md`` has
the byte-by-byte specification. Every function here turns bytes into values or values into
bytes (sans-I/O).
"""

from __future__ import annotations

import enum
import json
import pickle
import struct
import zlib
from collections.abc import Sequence
from typing import Any, cast

from ..codecs import DEFAULT_MAX_SIZE, get_codec
from ..errors import DamagedMessage, ProtocolError

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
    "envelope_size",
    "Buffer",
    "HEAD_SIZE",
    "HEADROOM",
    "MAGIC",
    "MAX_HEADERS",
    "VIEW_MIN",
]

MAGIC = b"MP"
VERSION = 2  # 2: the CRC-32 in the head
_HEAD = struct.Struct("!2sBIBBBIQ")  # magic, version, crc, kind, fmt, clen, hlen, id
HEAD_SIZE = _HEAD.size  # 22
_COVERED = 7  # the CRC covers every byte from here on
_PREFIX = struct.Struct("!2sBI")  # magic, version, crc
_FIELDS = struct.Struct("!BBBIQ")  # kind, fmt, clen, hlen, id: the head's covered part
_FIELDS_NONE = struct.Struct("!BBBIQ4s")  # the same and the codec name "none": the hot path
#: A body this far below ``max_message`` fits whatever its codec name and (small) headers.
HEADROOM = HEAD_SIZE + 255 + 1024
MAX_HEADERS = 64 * 1024
#: A pickled body at least this large is decoded as a view into the received message, not a
#: copy of its tail (pickle reads any buffer). Smaller ones stay ``bytes``: slicing a few KB
#: costs less than a view's bookkeeping, and every consumer of ``bytes`` keeps working.
VIEW_MIN = 64 * 1024
Buffer = bytes | bytearray | memoryview


class Kind(enum.IntEnum):
    """What a message means. Values are on the wire: never renumber."""

    # The handshake (see ClientAuth / ServerAuth).
    CHALLENGE = 1  # server -> client: body = nonce
    PROOF = 2  # client -> server: body = HMAC(server nonce) + client nonce
    WELCOME = 3  # server -> client: body = HMAC(client nonce)
    HELLO = 4  # peer -> coordinator, JSON headers: role, name, slots, ...
    # Work.
    SUBMIT = 10  # client -> coordinator: id = client's task number; body = the call
    TASK = 11  # coordinator -> worker: id = coordinator's task number; body = the call
    RESULT = 12  # worker -> coordinator -> client: body = the return value
    FAILURE = 13  # worker -> coordinator -> client: body = the exception
    CANCEL = 14  # client -> coordinator: forget task id if it has not started (no answer)
    # 15 is retired (an early worker -> coordinator STARTED): never reuse it.
    LEASES = 16  # client -> coordinator: JSON headers {"tasks": [ids], "cancel": bool}
    # Housekeeping.
    HEARTBEAT = 20  # either way: "I am alive"
    STATUS = 21  # client -> coordinator: asks for a status report
    STATUS_REPLY = 22  # coordinator -> client: JSON body
    FETCH = 23  # client -> coordinator: JSON headers {"task": id}: that task's outcome
    REGISTER = 24  # any peer -> coordinator: JSON headers: a service registry entry (with ttl)
    LOOKUP = 25  # client -> coordinator: JSON headers {"service": name}
    LOOKUP_REPLY = 26  # coordinator -> client: JSON body, the live entries offering it
    LEASES_REPLY = 27  # coordinator -> client: JSON body {"started": [ids], "cancelled": [ids]}
    ERROR = 30  # either way, just before closing: JSON headers {"reason": ...}
    # Tasks that submit tasks (a worker's connection also carries its tasks' own submissions).
    WAITING = 40  # worker -> coordinator: task id waits on its children; its slot is free
    RESUMED = 41  # worker -> coordinator: task id runs again (it may briefly exceed the slots)
    HOLDING = 42  # worker -> coordinator: task id keeps children of its own that may be stolen
    STEAL = 43  # coordinator -> worker: a slot is idle: give one kept child (of task id) to the queue
    # Topics (minipool.topics): 50-69. Requests carry JSON headers; see docs/topics.md.
    TOPIC_PRODUCE = 50  # client -> coordinator: headers {"topic"}, body = a batch of entries
    TOPIC_ACKS = 51  # coordinator -> client: JSON body {"partitions": [...], "offsets": [...]}
    TOPIC_FETCH = 52  # client -> coordinator: headers {"topic", "group" or "positions", ...}
    TOPIC_RECORDS = 53  # coordinator -> client: body = chunks of record frames
    TOPIC_ADMIN = (
        54  # client -> coordinator: headers {"op": create|list|describe|bounds|join|seek|commit|leave}
    )
    TOPIC_REPLY = 55  # coordinator -> client: JSON body, the answer to a TOPIC_ADMIN
    TOPIC_ERROR = 56  # coordinator -> client: headers {"reason"}: that one request was refused
    # Monitoring.
    DASHBOARD = 70  # client -> coordinator: JSON headers {"method", "target"}; body = JSON or empty
    DASHBOARD_REPLY = 71  # coordinator -> client: JSON body {"status": N, "value": ...}
    # Pipe sets (minipool.pipesets): 80-89.
    TOPIC_TRANSACT = 80  # client -> coordinator: outputs appended + inputs acknowledged, one step


class Format(enum.IntEnum):
    """How a body is serialized."""

    RAW = 0
    JSON = 1
    PICKLE = 2


# Enum lookups by value, as plain dicts: Kind(value) costs a few hundred nanoseconds a message.
_KINDS = {int(k): k for k in Kind}
_FORMATS = {int(f): f for f in Format}
_PICKLE = int(Format.PICKLE)  # (an enum member's lookup costs more than the rest of the test)


class Message:
    """One decoded envelope. ``body`` is still serialized and compressed (see :func:`decode_body`).

    A pickled body of :data:`VIEW_MIN` bytes or more, as ``decode(data, view=True)`` makes it,
    is a ``memoryview`` into the received message rather than a copy of its tail."""

    __slots__ = ("kind", "id", "headers", "body", "fmt", "codec", "body_crc")
    _FIELDS = ("kind", "id", "headers", "body", "fmt", "codec")  # what equality compares

    def __init__(
        self,
        kind: Kind,
        id: int = 0,
        body: bytes = b"",
        *,
        fmt: Format = Format.RAW,
        codec: str = "none",
        headers: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.id = id
        self.body = body
        self.fmt = fmt
        self.codec = codec
        self.headers = {} if headers is None else headers
        # The CRC-32 of the body alone, once known (decode computes it): a message that
        # forwards this body in a new envelope reuses it instead of reading the body again.
        self.body_crc: int | None = None

    def __repr__(self) -> str:
        return (
            f"Message({self.kind.name}, id={self.id}, fmt={self.fmt.name}, codec={self.codec!r},"
            f" headers={self.headers!r}, body={len(self.body)} bytes)"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self._FIELDS)


def encode(message: Message) -> bytes:
    """Serialize ``message`` into one transport message."""
    return encode_parts(
        message.kind, message.id, message.body, message.fmt, message.codec, message.headers, message.body_crc
    )


def encode_parts(
    kind: Kind,
    ident: int,
    body: Buffer,
    fmt: Format,
    codec: str,
    headers: dict[str, Any] | None,
    body_crc: int | None = None,
) -> bytes:
    """:func:`encode` without building a :class:`Message` first (the hot path's TASK).
    ``body_crc``: the body's own CRC-32, if the caller knows it (a body being forwarded)."""
    if codec == "none" and not headers:  # the hot path, as one join: no head built on its own
        fields = _pack_fields_none(kind, fmt, 4, 0, ident, b"none")
        crc = crc32(fields, crc32(body) if body_crc is None else body_crc)
        return b"".join((_pack_prefix(MAGIC, VERSION, crc), fields, body))
    return b"".join(encode_buffers(kind, ident, body, fmt, codec, headers, body_crc))


def encode_buffers(
    kind: Kind,
    ident: int,
    body: Buffer,
    fmt: Format,
    codec: str,
    headers: dict[str, Any] | None,
    body_crc: int | None = None,
) -> tuple[bytes, Buffer]:
    """:func:`encode_parts` as ``(envelope head, body)``, not joined: what a transport's
    :meth:`~minipool.transports.base.Connection.send_parts` takes, so that a large body goes
    to the kernel from where it is, never copied behind its head."""
    if codec == "none" and not headers:
        fields = _pack_fields_none(kind, fmt, 4, 0, ident, b"none")
        crc = crc32(fields, crc32(body) if body_crc is None else body_crc)
        return _pack_prefix(MAGIC, VERSION, crc) + fields, body
    codec_name = codec.encode("ascii")
    head = json.dumps(headers, separators=(",", ":")).encode() if headers else b""
    fields = _FIELDS.pack(kind, fmt, len(codec_name), len(head), ident)
    crc = crc32(head, crc32(codec_name, crc32(fields, crc32(body) if body_crc is None else body_crc)))
    return b"".join((_PREFIX.pack(MAGIC, VERSION, crc), fields, codec_name, head)), body


def encode_gathered(
    kind: Kind, ident: int, body: Sequence[Buffer], fmt: Format, codec: str, headers: dict[str, Any] | None
) -> tuple[Buffer, ...]:
    """:func:`encode_buffers` for a body that is itself several buffers back to back (a pickle
    written in parts, :mod:`minipool.rpc`): the CRC is chained over them, nothing is joined."""
    body_crc = 0
    for part in body:
        body_crc = crc32(part, body_crc)
    head, _ = encode_buffers(kind, ident, b"", fmt, codec, headers, body_crc)
    return (head, *body)


def envelope_size(body_size: int, codec: str = "none", headers: dict[str, Any] | None = None) -> int:
    """How many bytes :func:`encode` would make of a body of ``body_size`` bytes: what a
    transport's ``max_message`` is compared with. Lets a sender check a message it has not
    built (building it copies the body once more)."""
    extra = len(json.dumps(headers, separators=(",", ":")).encode()) if headers else 0
    return HEAD_SIZE + len(codec) + extra + body_size


crc32 = zlib.crc32
_pack_prefix = _PREFIX.pack
_pack_fields_none = _FIELDS_NONE.pack


def decode(data: bytes, *, view: bool = False) -> Message:
    """Parse one transport message. With ``view``, a pickled body of :data:`VIEW_MIN` bytes or
    more is a ``memoryview`` into ``data``, not a copy of its tail (:mod:`minipool.rpc` asks
    for it; the pool does not: see docs/protocol.md).

    Raises:
        DamagedMessage: the CRC-32 does not match: the message changed on the way.
        ProtocolError: wrong magic or version, unknown kind or format, lengths that do not fit,
            headers that are not a JSON object. Never any other exception, for any input.
    """
    size = len(data)
    if size < HEAD_SIZE:
        if data[:2] != MAGIC:
            raise ProtocolError(f"bad magic {bytes(data[:2])!r}: not a minipool peer")
        raise ProtocolError(f"message of {size} bytes is shorter than the {HEAD_SIZE}-byte head")
    magic, version, crc, kind, fmt, clen, hlen, ident = _unpack_head(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}: not a minipool peer")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version} (this side speaks {VERSION})")
    end_codec = HEAD_SIZE + clen
    end_headers = end_codec + hlen
    if hlen > MAX_HEADERS or end_headers > size:
        raise DamagedMessage(
            f"codec and header lengths run past the end of a {_describe(kind)} of"
            f" {size} bytes: damaged on the way, or not a minipool sender"
        )
    # The body is cut out once (the message keeps it) and its CRC chained into the check. A
    # view is safe: the transport refills no message that anyone holds, and the view holds
    # this one (see Connection.recv), so the view never sees later bytes.
    if view and size - end_headers >= VIEW_MIN and fmt == _PICKLE:
        # (Typed as bytes: a view is bytes-like for everything that reads a pickled body --
        # pickle, the codecs, joins -- and only those ever see one.)
        body = cast(bytes, memoryview(data)[end_headers:])
    else:
        body = data[end_headers:]
    body_crc = crc32(body)
    if crc32(data[_COVERED:end_headers], body_crc) != crc:
        raise DamagedMessage(
            f"a {_describe(kind)} of {size} bytes failed its CRC-32 check: damaged on the way"
        )
    kind = _KINDS.get(kind)
    fmt = _FORMATS.get(fmt)
    if kind is None or fmt is None:
        raise ProtocolError(f"unknown message kind or body format in {bytes(data[:HEAD_SIZE])!r}")
    if clen == 4 and data[HEAD_SIZE:end_codec] == b"none":  # the common case, without decoding
        codec = "none"
    else:
        try:
            codec = data[HEAD_SIZE:end_codec].decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("codec name is not ASCII") from None
    headers: dict[str, Any] = {}
    if hlen:
        try:
            headers = json.loads(data[end_codec:end_headers])
        except (ValueError, RecursionError):
            raise ProtocolError("headers are not valid JSON") from None
        if not isinstance(headers, dict):
            raise ProtocolError("headers are not a JSON object")
    # The fields go straight into a new Message: its __init__, with keywords, cost twice as
    # much, and this runs for every message either side receives.
    message = _new_message(Message)
    message.kind, message.id, message.body, message.fmt = kind, ident, body, fmt
    message.codec, message.headers, message.body_crc = codec or "none", headers, body_crc
    return message


_unpack_head = _HEAD.unpack_from
_new_message = object.__new__


def _describe(kind: int) -> str:
    known = _KINDS.get(kind)
    return "message" if known is None else f"message (a {known.name}, if that byte is intact)"


def encode_body(value: Any, fmt: Format = Format.PICKLE, codec: str = "none", dumps: Any = None) -> bytes:
    """Serialize and compress a body. ``dumps`` overrides the pickler (see :mod:`minipool.shipping`)."""
    if fmt is Format.PICKLE:
        data = (dumps or pickle.dumps)(value)
    elif fmt is Format.JSON:
        data = json.dumps(value, separators=(",", ":")).encode()
    else:
        data = bytes(value)
    return data if codec == "none" else get_codec(codec).compress(data)


def decode_body(message: Message, *, trusted: bool, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decompress and deserialize ``message.body``.

    Args:
        trusted: the peer passed the HMAC handshake. Pickle bodies are refused otherwise.
        max_size: largest decompressed size accepted (decompression-bomb guard).

    Raises:
        ProtocolError: a pickle body from an untrusted peer, or a body that does not decode.
        CodecError: unknown codec or corrupt/oversized compressed data.
    """
    data = (
        message.body
        if message.codec == "none"
        else get_codec(message.codec).decompress(message.body, max_size)
    )
    if message.fmt is Format.RAW:
        return data
    if message.fmt is Format.JSON:
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise ProtocolError("JSON body does not parse") from None
    if not trusted:
        raise ProtocolError("refusing to unpickle a body from an unauthenticated peer")
    return pickle.loads(data)
