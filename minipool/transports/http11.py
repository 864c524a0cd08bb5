"""HTTP/1.1 message heads and chunked bodies, sans-I/O: bytes in, dataclasses out, and back.

Technique: *a protocol core with no socket in sight*, in the style of ``h11``. This module only
turns bytes into :class:`Request` / :class:`Response` objects and back, and encodes or decodes
``Transfer-Encoding: chunked``. The ``http://`` transport (:mod:`minipool.transports.http`) and
the WebSocket opening handshake (:mod:`minipool.transports.websocket`) are thin loops around it,
and the tests feed it plain bytes, fuzzed with hypothesis.

Why it is strict (RFC 9112): an HTTP server is where request smuggling and header injection
happen, and both come from parsers that are lenient in *different* ways. So this one accepts
one spelling of each thing and rejects the rest with an :class:`HttpError` that carries the
status code to answer with:

* the head ends at the first ``CRLF CRLF`` and every line ends with CRLF; a bare LF or CR, any
  other control character, or an obs-fold continuation line (leading space or tab) is a 400;
* header names are tokens (no spaces before the colon); more than :data:`MAX_HEADERS` headers is
  a 431, and so is a head larger than :data:`MAX_HEAD`;
* ``Content-Length`` must be one run of digits, given once (no duplicates, signs or lists);
* only ``HTTP/1.0`` and ``HTTP/1.1`` are spoken (505 for any other version).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import ProtocolError

__all__ = [
    "Headers",
    "Request",
    "Response",
    "HttpError",
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_CHUNK_LINE",
    "parse_request",
    "parse_response",
    "format_request",
    "format_response",
    "final_response",
    "error_response",
    "health_response",
    "content_length",
    "encode_chunk",
    "LAST_CHUNK",
    "parse_chunk_size",
    "ChunkedDecoder",
    "REASONS",
]

#: Largest request or response head (start line + headers + blank line) accepted.
MAX_HEAD = 64 * 1024
#: Most header fields accepted in one head.
MAX_HEADERS = 100
#: Longest chunk-size line (hex digits, extensions, CRLF) accepted.
MAX_CHUNK_LINE = 1024

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

# RFC 9110 token characters; field values are visible ASCII or obs-text, with inner SP / HTAB.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3}) ([\t\x20-\x7e\x80-\xff]*)")
_HEADER_LINE = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*(" + _VCHAR + rb"(?:[ \t\x21-\x7e\x80-\xff]*" + _VCHAR + rb")?)?[ \t]*"
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


class HttpError(ProtocolError):
    """A message breaks HTTP/1.1; ``status`` is the response a server should answer with.

    Attributes:
        status: 400 bad syntax, 408 timeout, 411 length required, 413 too large,
            431 headers too large, 505 unsupported version (or a client-side status received).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.detail = message


class Headers:
    """Header fields: a case-insensitive multi-dict that keeps the order they arrived in."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append one field (an existing field of the same name is kept)."""
        self._items.append((name, value))
        self._index.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (an empty list if absent)."""
        return list(self._index.get(name.lower(), ()))

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs in arrival order, names as sent."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass
class Request:
    """A parsed request head."""

    method: str
    target: str
    version: str  # "HTTP/1.1"
    headers: Headers


@dataclass
class Response:
    """A parsed response head."""

    version: str
    status: int
    reason: str
    headers: Headers


def _split_head(head: bytes) -> list[bytes]:
    if len(head) > MAX_HEAD:
        raise HttpError(431, f"head of {len(head)} bytes exceeds {MAX_HEAD}")
    if not head.endswith(b"\r\n\r\n"):
        raise HttpError(400, "head does not end with CRLF CRLF")
    lines = head[:-4].split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    return lines


def _parse_headers(lines: list[bytes]) -> Headers:
    headers = Headers()
    for line in lines:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            if line[:1] in (b" ", b"\t"):
                raise HttpError(400, "obsolete line folding in header")
            raise HttpError(400, f"malformed header line {line[:60]!r}")
        value = match.group(2) or b""
        headers.add(match.group(1).decode("ascii"), value.decode("latin-1"))
    return headers


def _check_version(major: bytes, minor: bytes) -> str:
    if major != b"1" or minor not in (b"0", b"1"):
        raise HttpError(505, f"HTTP/{major.decode()}.{minor.decode()} is not supported")
    return "HTTP/1." + minor.decode()


def parse_request(head: bytes) -> Request:
    """Parse a request head (the bytes up to and including the blank line).

    Raises:
        HttpError: 400 malformed, 431 too many or too large headers, 505 unsupported version.
    """
    lines = _split_head(head)
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise HttpError(400, f"malformed request line {lines[0][:60]!r}")
    version = _check_version(match.group(3), match.group(4))
    return Request(
        match.group(1).decode("ascii"), match.group(2).decode("ascii"), version, _parse_headers(lines[1:])
    )


def parse_response(head: bytes) -> Response:
    """Parse a response head (the bytes up to and including the blank line).

    Raises:
        HttpError: 400 malformed, 431 too many or too large headers, 505 unsupported version.
    """
    lines = _split_head(head)
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise HttpError(400, f"malformed status line {lines[0][:60]!r}")
    version = _check_version(match.group(1), match.group(2))
    return Response(version, int(match.group(3)), match.group(4).decode("latin-1"), _parse_headers(lines[1:]))


def _format_fields(headers: Iterable[tuple[str, str]]) -> list[str]:
    out = []
    for name, value in headers:
        # Refuse to *write* what we would refuse to read: this is header injection's door.
        line = f"{name}: {value}".encode("latin-1")
        if _HEADER_LINE.fullmatch(line) is None:
            raise ValueError(f"invalid header field {name!r}: {value!r}")
        out.append(f"{name}: {value}\r\n")
    return out


def format_request(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """Serialize a request head (HTTP/1.1). The caller adds Host and any body framing.

    Raises:
        ValueError: the method, target or a header would not parse back.
    """
    line = f"{method} {target} HTTP/1.1"
    if _REQUEST_LINE.fullmatch(line.encode("latin-1")) is None:
        raise ValueError(f"invalid request line {line!r}")
    return "".join([line, "\r\n", *_format_fields(headers), "\r\n"]).encode("latin-1")


def format_response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """Serialize a response head and its (small) body in one buffer.

    ``Content-Length`` is added for a non-empty body unless ``headers`` frame it already.

    Raises:
        ValueError: the status, reason or a header would not parse back.
    """
    if not 100 <= status <= 999 or any(c in reason for c in "\r\n"):
        raise ValueError(f"invalid status line {status} {reason!r}")
    fields = list(headers)
    names = {name.lower() for name, _ in fields}
    if body and "content-length" not in names and "transfer-encoding" not in names:
        fields.append(("Content-Length", str(len(body))))
    head = "".join([f"HTTP/1.1 {status} {reason}\r\n", *_format_fields(fields), "\r\n"])
    return head.encode("latin-1") + body


def final_response(
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A whole response after which the server closes the connection (``Connection: close``):
    a refusal, or the answer to a health check."""
    fields = [*headers, ("Content-Type", content_type), ("Connection", "close")]
    return format_response(status, REASONS.get(status, "Error"), fields, body)


def error_response(status: int, detail: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The answer to a request refused with ``status``: ``detail`` as one line of text."""
    return final_response(status, detail.encode("utf-8", "replace") + b"\n", headers=headers)


def health_response(transport: str, **facts: object) -> bytes:
    """The answer to ``GET /health``: ``200`` and a small JSON object that says the server is
    up, which transport answered, and any ``facts`` the server adds (for curl and load
    balancers)."""
    body = json.dumps({"status": "ok", "transport": transport, **facts}).encode() + b"\n"
    return final_response(200, body, content_type="application/json")


def content_length(headers: Headers) -> int | None:
    """The body length announced by ``Content-Length``, or ``None`` if there is none.

    Raises:
        HttpError: 400 if it is repeated, a list, negative, not digits, or sent together
            with ``Transfer-Encoding`` (the request-smuggling combination).
    """
    values = headers.get_all("content-length")
    if not values:
        return None
    if len(values) > 1:
        raise HttpError(400, "duplicate Content-Length")
    if "transfer-encoding" in headers:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    raw = values[0].encode("latin-1")
    if _DIGITS.fullmatch(raw) is None:
        raise HttpError(400, f"invalid Content-Length {values[0][:30]!r}")
    return int(raw)


# -- chunked transfer coding -----------------------------------------------------------------

#: The zero-size chunk (with no trailers) that ends a chunked body.
LAST_CHUNK = b"0\r\n\r\n"


def encode_chunk(data: bytes | bytearray | memoryview) -> tuple[bytes, bytes | bytearray | memoryview, bytes]:
    """The three parts of one chunk, for a gather write (the data is not copied).

    Raises:
        ValueError: ``data`` is empty (a zero-size chunk would end the body).
    """
    if not len(data):
        raise ValueError("an empty chunk would end the body; send LAST_CHUNK for that")
    return b"%x\r\n" % len(data), data, b"\r\n"


def parse_chunk_size(line: bytes, limit: int) -> int:
    """Parse a chunk-size line (``1a2b;ext=1\\r\\n``); extensions are ignored.

    Raises:
        HttpError: 400 malformed, 413 if the size exceeds ``limit``.
    """
    if not line.endswith(b"\r\n") or len(line) > MAX_CHUNK_LINE:
        raise HttpError(400, "malformed chunk-size line")
    size_text, _, ext = line[:-2].partition(b";")
    if _HEX.fullmatch(size_text) is None or any(b < 0x20 and b != 9 or b == 0x7F for b in ext):
        raise HttpError(400, f"malformed chunk size {line[:30]!r}")
    size = int(size_text, 16)
    if size > limit:
        raise HttpError(413, f"chunk of {size} bytes exceeds {limit}")
    return size


class ChunkState(enum.Enum):
    """Where a :class:`ChunkedDecoder` is in the body."""

    SIZE = "size"  # waiting for a chunk-size line
    DATA = "data"  # inside a chunk's data
    DATA_END = "data-end"  # waiting for the CRLF after the data
    TRAILER = "trailer"  # after the last chunk: trailer fields until a blank line
    DONE = "done"  # the body is complete; more bytes are an error


class ChunkedDecoder:
    """Incremental decoder of a chunked body: feed bytes as they come, get whole chunks out.

    Chunks are returned whole (never split at a read boundary) because the ``http://``
    transport carries one message per chunk. Memory is bounded by ``max_chunk``.

    Args:
        max_chunk: largest chunk accepted (413 beyond it).
    """

    def __init__(self, max_chunk: int) -> None:
        self.max_chunk = max_chunk
        self.state = ChunkState.SIZE
        self._buf = bytearray()
        self._size = 0
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self.state is ChunkState.DONE

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return the chunks it completed, in order.

        Raises:
            HttpError: malformed framing (400) or a chunk above ``max_chunk`` (413).
        """
        if data and self.state is ChunkState.DONE:
            raise HttpError(400, "data after the last chunk")
        self._buf += data
        out: list[bytes] = []
        while True:
            if self.state is ChunkState.SIZE or self.state is ChunkState.TRAILER:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > MAX_CHUNK_LINE:
                        raise HttpError(
                            400 if self.state is ChunkState.SIZE else 431,
                            "chunk-size or trailer line too long",
                        )
                    return out
                line = bytes(self._buf[: end + 2])
                del self._buf[: end + 2]
                if self.state is ChunkState.TRAILER:
                    self._trailer(line)
                    if self.state is ChunkState.DONE:
                        if self._buf:
                            raise HttpError(400, "data after the last chunk")
                        return out
                    continue
                self._size = parse_chunk_size(line, self.max_chunk)
                self.state = ChunkState.DATA if self._size else ChunkState.TRAILER
            elif self.state is ChunkState.DATA:
                if len(self._buf) < self._size:
                    return out
                out.append(bytes(self._buf[: self._size]))
                del self._buf[: self._size]
                self.state = ChunkState.DATA_END
            elif self.state is ChunkState.DATA_END:
                if len(self._buf) < 2:
                    return out
                if self._buf[:2] != b"\r\n":
                    raise HttpError(400, "chunk data not followed by CRLF")
                del self._buf[:2]
                self.state = ChunkState.SIZE
            else:
                return out

    def _trailer(self, line: bytes) -> None:
        if line == b"\r\n":
            self.state = ChunkState.DONE
            return
        self._trailer_bytes += len(line)
        if self._trailer_bytes > MAX_HEAD:
            raise HttpError(431, "trailer fields too large")
        if _HEADER_LINE.fullmatch(line[:-2]) is None:
            raise HttpError(400, f"malformed trailer field {line[:60]!r}")
