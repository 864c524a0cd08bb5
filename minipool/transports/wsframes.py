"""WebSocket frames (RFC 6455 §5): bytes to frames and frames to bytes, with no socket in sight.

Technique: a *sans-I/O protocol core*. Everything RFC 6455 says about the bytes of a frame --
the header layout, client-to-server masking, fragmentation, the rules for control frames, the
size limit, UTF-8 in text messages, the close payload -- lives here as pure functions and two
small state machines. :mod:`minipool.transports.websocket` is only a thin loop that moves bytes
between a socket and these functions, which is why this file can be unit-tested and fuzzed with
plain ``bytes`` (``tests/test_wsframes.py``).

A frame on the wire (RFC 6455 §5.2)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               | Masking-key, if MASK set to 1 |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

The parser is a *generator over read_exact*, the style of the ``websockets`` library: it yields
the number of bytes it needs next and is sent those bytes back, so the same code runs under a
blocking socket (:mod:`~minipool.transports.websocket`), an event loop, or a test feeding a
``bytes`` object (:class:`FrameParser`). It checks the declared length against the limit
*before* asking for the payload: a frame that announces 2 GB costs 10 bytes of reading and a
1009 close, never a 2 GB allocation.

Masking (§5.3) lives in :mod:`~minipool.transports.wsmask`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import struct
from collections.abc import Callable, Generator

from ..errors import FrameTooLarge, ProtocolError
from .wsmask import apply_mask, masked_copy

Buffer = bytes | bytearray | memoryview

__all__ = [
    "Opcode",
    "CloseCode",
    "Frame",
    "Message",
    "WebSocketProtocolError",
    "MessageTooBig",
    "apply_mask",
    "frame_header",
    "serialize",
    "parse_frame",
    "binary_frame_cutter",
    "FrameParser",
    "parse_close",
    "serialize_close",
]


class Opcode(enum.IntEnum):
    """The 4-bit frame type (§5.2). 0-2 carry data, 8-10 are control frames."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """Status codes of a close frame (§7.4.1 and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "no close frame at all"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# Codes a peer may put in a close frame: the defined ones minus 1004-1006 and 1015, plus the
# ranges registered for libraries (3000-3999) and private use (4000-4999).
_WIRE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015))


def _valid_wire_code(code: int) -> bool:
    return code in _WIRE_CODES or 3000 <= code <= 4999


class WebSocketProtocolError(ProtocolError):
    """The peer broke RFC 6455; ``code`` is the close code to send it before hanging up.

    Args:
        code: a :class:`CloseCode` (1002 framing, 1007 bad data, 1009 too big, ...).
        reason: a short explanation, sent as the close frame's reason.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {int(code)})")
        self.code = CloseCode(code) if code in CloseCode._value2member_map_ else code
        self.reason = reason


class MessageTooBig(FrameTooLarge, WebSocketProtocolError):
    """A frame or a reassembled message is larger than the limit (close code 1009).

    It is both a :class:`~minipool.errors.FrameTooLarge` (what every transport raises for an
    oversized message) and a :class:`WebSocketProtocolError` carrying the code.
    """

    def __init__(self, size: int, limit: int) -> None:
        # FrameTooLarge's own __init__ would call super() with one argument, which in this
        # diamond is WebSocketProtocolError's: initialise through that one instead.
        WebSocketProtocolError.__init__(
            self, CloseCode.MESSAGE_TOO_BIG, f"message of {size} bytes exceeds the limit of {limit}"
        )
        self.size = size
        self.limit = limit


@dataclasses.dataclass(slots=True)
class Frame:
    """One WebSocket frame, payload already unmasked."""

    opcode: Opcode
    payload: bytes = b""
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False


@dataclasses.dataclass(slots=True)
class Message:
    """A whole data message, reassembled from one or more frames."""

    opcode: Opcode  # TEXT or BINARY
    data: bytes


# -- serializing ---------------------------------------------------------------------------------

_HEAD = struct.Struct("!BB")
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_WHOLE_BINARY = 0x80 | Opcode.BINARY  # FIN, no RSV bit, BINARY: one frame, one message


def frame_header(
    opcode: int, length: int, *, fin: bool = True, key: bytes | None = None, rsv: int = 0
) -> bytes:
    """The header of a frame: first byte, length (7, 16 or 64 bits), masking key if any.

    The payload is not touched, so a sender can write ``(header, payload)`` with one
    gather-write and no copy. ``rsv`` is the three RSV bits already shifted (0x70 for all).
    """
    b0 = (0x80 if fin else 0) | rsv | opcode
    m = 0x80 if key is not None else 0
    if length < 126:
        head = _HEAD.pack(b0, m | length)
    elif length < 65536:
        head = _HEAD16.pack(b0, m | 126, length)
    else:
        head = _HEAD64.pack(b0, m | 127, length)
    return head + key if key is not None else head


def small_binary_frame(payload: bytes | bytearray | memoryview, key: bytes | None) -> bytes:
    """A whole, unfragmented BINARY frame of under 64 KiB in one buffer, masked with ``key``
    if one is given: the send side's commonest case (the mirror of
    :func:`binary_frame_cutter`), without :func:`frame_header`'s general arguments."""
    n = len(payload)
    if key is None:
        return (_HEAD.pack(_WHOLE_BINARY, n) if n < 126 else _HEAD16.pack(_WHOLE_BINARY, 126, n)) + payload
    head = _HEAD.pack(_WHOLE_BINARY, 0x80 | n) if n < 126 else _HEAD16.pack(_WHOLE_BINARY, 0xFE, n)
    return head + key + masked_copy(payload, key)


def serialize(frame: Frame, mask: bool | bytes = False) -> bytes:
    """The bytes of ``frame``.

    Args:
        frame: the frame to encode.
        mask: ``True`` to mask with a fresh random key (clients must), a 4-byte key to use
            that one (tests), ``False`` not to mask (servers must not).
    """
    key: bytes | None
    if mask is True:
        key = os.urandom(4)
    else:
        key = mask or None
    rsv = (0x40 if frame.rsv1 else 0) | (0x20 if frame.rsv2 else 0) | (0x10 if frame.rsv3 else 0)
    head = frame_header(frame.opcode, len(frame.payload), fin=frame.fin, key=key, rsv=rsv)
    return head + (apply_mask(frame.payload, key) if key else bytes(frame.payload))


def serialize_close(code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
    """The payload of a close frame: a 2-byte code then a UTF-8 reason, 125 bytes at most."""
    if code == CloseCode.NO_STATUS_RCVD:
        return b""  # 1005 means "no code": say it by sending none
    return _U16.pack(code) + reason.encode("utf-8", "replace")[:123]


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame's payload (an empty payload means 1005).

    Raises:
        WebSocketProtocolError: 1 byte long or a code no one may send (1002), the reason is
            not UTF-8 (1007).
    """
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "close frame of 1 byte")
    (code,) = _U16.unpack_from(payload)
    if not _valid_wire_code(code):
        raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return (CloseCode(code) if code in CloseCode._value2member_map_ else code), reason


# -- parsing -------------------------------------------------------------------------------------

_OPCODES = {int(op): op for op in Opcode}


def parse_frame(*, masked: bool, max_size: int | None = None) -> Generator[int, bytes, Frame]:
    """Parse one frame: yields how many bytes it needs, is sent them, returns the :class:`Frame`.

    Args:
        masked: ``True`` on the server (client frames must be masked), ``False`` on the client
            (server frames must not be).
        max_size: the largest data-frame payload to accept; checked on the declared length,
            before the payload is asked for. ``None``: no limit.

    Raises:
        WebSocketProtocolError: 1002 for reserved bits, an unknown opcode, the wrong masking, a
            fragmented or over-long control frame; :class:`MessageTooBig` (1009) past max_size.
    """
    b0, b1 = _HEAD.unpack((yield 2))
    if b0 & 0x70:
        raise WebSocketProtocolError(
            CloseCode.PROTOCOL_ERROR, "reserved bits set and no extension negotiated"
        )
    opcode = _OPCODES.get(b0 & 0x0F)
    if opcode is None:
        raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {b0 & 0x0F:#x}")
    if bool(b1 & 0x80) != masked:
        raise WebSocketProtocolError(
            CloseCode.PROTOCOL_ERROR,
            "client frame is not masked" if masked else "server frame is masked",
        )
    fin = bool(b0 & 0x80)
    length = b1 & 0x7F
    if opcode >= 8:
        # Control frames may sit between the fragments of a message, so they must be whole
        # and small (§5.5); that is also why one never needs the size limit.
        if not fin:
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
        if length > 125:
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes")
    elif length == 126:
        (length,) = _U16.unpack((yield 2))
    elif length == 127:
        (length,) = _U64.unpack((yield 8))
        if length >> 63:
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "64-bit length has its top bit set")
    if max_size is not None and length > max_size and opcode < 8:
        raise MessageTooBig(length, max_size)
    if masked:
        # Key and payload in one read: one fewer round through the I/O loop per frame.
        data = yield 4 + length
        payload = apply_mask(memoryview(data)[4:], data[:4]) if length else b""
    else:
        payload = (yield length) if length else b""
    return Frame(opcode, payload, fin)


_WHOLE_BINARY = 0x80 | Opcode.BINARY  # FIN, no RSV bit, BINARY: one frame, one message


def binary_frame_cutter(*, masked: bool, max_size: int) -> Callable[[Buffer, int], tuple[int, bytes] | None]:
    """A fast path for :func:`parse_frame`'s commonest case, over bytes already received.

    The function returned, given ``(data, start)``, returns ``(end, payload)`` -- where the
    frame ends in ``data`` and its payload, unmasked -- if ``data[start:]`` begins with a whole,
    unfragmented BINARY frame with a 7- or 16-bit length within ``max_size``, masked as
    ``masked`` says. Anything else -- a control frame, a fragment, TEXT (its UTF-8 must be
    checked), a 64-bit length, a frame not yet whole, a frame that breaks the protocol --
    gives None, and :func:`parse_frame` handles it (raising what it must). Every frame the
    cutter accepts, :func:`parse_frame` accepts the same.
    """
    whole_binary = _WHOLE_BINARY
    unpack16 = _U16.unpack_from

    def cut(data: Buffer, start: int) -> tuple[int, bytes] | None:
        size = len(data)
        if size - start < 2 or data[start] != whole_binary:
            return None
        b1 = data[start + 1]
        if (b1 >= 0x80) != masked:
            return None
        length = b1 & 0x7F
        pos = start + 2
        if length == 127:
            return None
        if length == 126:
            if size < pos + 2:
                return None
            (length,) = unpack16(data, pos)
            pos += 2
        if length > max_size:
            return None
        if masked:
            end = pos + 4 + length
            if end > size:
                return None
            return end, apply_mask(data[pos + 4 : end], data[pos : pos + 4])
        end = pos + length
        if end > size:
            return None
        return end, bytes(data[pos:end])

    return cut


class FrameParser:
    """Incremental parser: :meth:`feed` bytes as they arrive, get the frames they complete.

    The generator of :func:`parse_frame` driven over a buffer; for event loops and tests.
    """

    def __init__(self, *, masked: bool, max_size: int | None = None) -> None:
        self._masked = masked
        self._max_size = max_size
        self._buf = bytearray()
        self._gen: Generator[int, bytes, Frame] | None = None
        self._need = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data``; return the frames now complete (possibly none).

        Raises:
            WebSocketProtocolError: as :func:`parse_frame`; the parser is unusable afterwards.
        """
        self._buf += data
        frames: list[Frame] = []
        while True:
            if self._gen is None:
                self._gen = parse_frame(masked=self._masked, max_size=self._max_size)
                self._need = next(self._gen)
            if len(self._buf) < self._need:
                return frames
            chunk = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            try:
                self._need = self._gen.send(chunk)
            except StopIteration as done:
                frames.append(done.value)
                self._gen = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)
