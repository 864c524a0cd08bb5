"""WebSocket messages (RFC 6455 §5.4): data frames reassembled, size-limited, UTF-8 checked.

Technique: a *sans-I/O state machine*. A message may arrive as several frames (fragments), and
control frames may come between them; :class:`MessageAssembler` is fed the data frames in
order and says when a message is whole. It enforces the size limit over all the fragments
(1009) and checks TEXT with an incremental UTF-8 decoder, so a bad byte fails the message as
soon as it arrives (1007), not after the last fragment. No socket in sight: the tests feed it
:class:`~minipool.transports.wsframes.Frame` objects.
"""

from __future__ import annotations

import codecs

from .wsframes import CloseCode, Frame, Message, MessageTooBig, Opcode, WebSocketProtocolError

__all__ = ["MessageAssembler"]


class MessageAssembler:
    """Reassembles data frames into messages (§5.4), enforcing the size limit and UTF-8.

    Feed it every TEXT, BINARY and CONT frame in order (control frames go elsewhere: they may
    arrive between fragments). Text is checked with an incremental UTF-8 decoder, so a bad
    byte fails the message at once (1007) instead of after the last fragment.

    Args:
        max_size: the largest message, in bytes, summed over its fragments.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._opcode: Opcode | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def idle(self) -> bool:
        """No fragmented message is in progress: the next data frame starts a new one."""
        return self._opcode is None

    @property
    def budget(self) -> int:
        """How many more payload bytes the message in progress may have: the frame limit to
        give :func:`parse_frame`, so an oversized fragment is refused before it is read."""
        return self.max_size - self._size

    def feed(self, frame: Frame) -> Message | None:
        """Add one data frame; return the message it completes, or ``None``.

        Raises:
            WebSocketProtocolError: 1002 for a continuation with no message to continue or a
                new message inside another, 1007 for invalid UTF-8 in text, 1009 (as
                :class:`MessageTooBig`) past ``max_size``.
        """
        opcode, payload = frame.opcode, frame.payload
        if opcode is Opcode.CONT:
            if self._opcode is None:
                raise WebSocketProtocolError(
                    CloseCode.PROTOCOL_ERROR, "continuation frame with no message to continue"
                )
        else:
            if self._opcode is not None:
                raise WebSocketProtocolError(
                    CloseCode.PROTOCOL_ERROR, "new message before the last one was finished"
                )
            if frame.fin:  # the common case: a whole message in one frame
                if len(payload) > self.max_size:
                    raise MessageTooBig(len(payload), self.max_size)
                if opcode is Opcode.TEXT:
                    _check_utf8(payload)
                return Message(opcode, payload)
            self._opcode = opcode
            if opcode is Opcode.TEXT:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._size += len(payload)
        if self._size > self.max_size:
            raise MessageTooBig(self._size, self.max_size)
        if self._decoder is not None:
            try:
                self._decoder.decode(payload, frame.fin)
            except UnicodeDecodeError:
                raise WebSocketProtocolError(CloseCode.INVALID_DATA, "text is not UTF-8") from None
        self._parts.append(payload)
        if not frame.fin:
            return None
        message = Message(self._opcode, b"".join(self._parts))
        self._opcode, self._parts, self._size, self._decoder = None, [], 0, None
        return message


def _check_utf8(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError(CloseCode.INVALID_DATA, "text is not UTF-8") from None
