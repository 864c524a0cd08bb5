"""The sans-I/O HTTP/1.1 core: heads, Content-Length, chunked coding; strictness and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipool.errors import ProtocolError
from minipool.transports.http11 import (
    LAST_CHUNK,
    MAX_HEAD,
    ChunkedDecoder,
    ChunkState,
    Headers,
    HttpError,
    content_length,
    encode_chunk,
    format_request,
    format_response,
    parse_chunk_size,
    parse_request,
    parse_response,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_parse_request_basic():
    req = parse_request(
        b"POST /minipool/abc HTTP/1.1\r\nHost: x:1\r\nContent-Length: 5\r\nX-A: 1\r\nx-a:  2  \r\n\r\n"
    )
    assert (req.method, req.target, req.version) == ("POST", "/minipool/abc", "HTTP/1.1")
    assert req.headers.get("HOST") == "x:1"
    assert req.headers.get_all("X-a") == ["1", "2"]
    assert "content-length" in req.headers and "nope" not in req.headers
    assert req.headers.items()[0] == ("Host", "x:1")
    assert content_length(req.headers) == 5


def test_parse_response_basic():
    resp = parse_response(b"HTTP/1.1 204 No Content\r\nServer: m\r\n\r\n")
    assert (resp.status, resp.reason, resp.headers.get("server")) == (204, "No Content", "m")
    assert parse_response(b"HTTP/1.0 200 \r\n\r\n").reason == ""


def test_headers_multidict():
    h = Headers([("A", "1")])
    h.add("a", "2")
    assert h.get("A") == "1" and h.get_all("a") == ["1", "2"] and len(h) == 2
    assert h.get("b") is None and h.get("b", "d") == "d" and h.get_all("b") == []


@pytest.mark.parametrize(
    "head,status",
    [
        (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),  # obs-fold
        (b"GET / HTTP/1.1\nA: b\r\n\r\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n", 400),  # bare LF in a field
        (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400),  # bare CR
        (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", 400),  # control character
        (b"GET / HTTP/1.1\r\nA : b\r\n\r\n", 400),  # space before colon
        (b"GET / HTTP/1.1\r\nA B: b\r\n\r\n", 400),  # space in name
        (b"GET / HTTP/1.1\r\n: b\r\n\r\n", 400),  # empty name
        (b"GET  / HTTP/1.1\r\n\r\n", 400),  # double space
        (b"GET / HTTP/1.1 \r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n", 400),  # no blank line
        (b"GET / HTTP/1.1\r\n\r\nA: b\r\n\r\n", 400),  # blank line inside
        (b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nA: " + b"x" * MAX_HEAD + b"\r\n\r\n", 431),
    ],
)
def test_parse_request_rejects(head, status):
    with pytest.raises(HttpError) as info:
        parse_request(head)
    assert info.value.status == status
    assert isinstance(info.value, ProtocolError)


def test_hundred_headers_is_the_limit():
    assert len(parse_request(b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 100 + b"\r\n").headers) == 100


@pytest.mark.parametrize("values", [["5", "5"], ["-1"], ["+5"], ["5 "], ["0x5"], ["5,5"], [""], ["1" * 19]])
def test_content_length_rejects(values):
    h = Headers([("Content-Length", v) for v in values])
    with pytest.raises(HttpError) as info:
        content_length(h)
    assert info.value.status == 400


def test_content_length_with_transfer_encoding_is_smuggling():
    h = Headers([("Content-Length", "5"), ("Transfer-Encoding", "chunked")])
    with pytest.raises(HttpError):
        content_length(h)
    assert content_length(Headers()) is None
    assert content_length(Headers([("content-length", "007")])) == 7


def test_format_round_trip():
    raw = format_request("POST", "/x?y=1", [("Host", "h"), ("Content-Length", "3")])
    req = parse_request(raw)
    assert req.target == "/x?y=1" and req.headers.get("content-length") == "3"
    raw = format_response(200, "OK", [("Content-Type", "application/json")], b"{}")
    head, _, body = raw.partition(b"\r\n\r\n")
    resp = parse_response(head + b"\r\n\r\n")
    assert resp.status == 200 and content_length(resp.headers) == 2 and body == b"{}"


@pytest.mark.parametrize("name,value", [("A", "b\r\nInjected: 1"), ("A B", "c"), ("A", "\x00")])
def test_format_refuses_injection(name, value):
    with pytest.raises(ValueError):
        format_request("GET", "/", [(name, value)])
    with pytest.raises(ValueError):
        format_response(200, "OK", [(name, value)])
    with pytest.raises(ValueError):
        format_request("GET", "/ x", [])


def test_chunked_round_trip_byte_by_byte():
    body = b"".join(b"".join(encode_chunk(c)) for c in [b"hello", b"x" * 300, b"!"]) + LAST_CHUNK
    dec = ChunkedDecoder(max_chunk=1000)
    chunks = []
    for i in range(len(body)):
        chunks += dec.feed(body[i : i + 1])
    assert chunks == [b"hello", b"x" * 300, b"!"] and dec.done
    with pytest.raises(HttpError):
        dec.feed(b"1\r\n")


def test_chunked_extensions_and_trailers():
    dec = ChunkedDecoder(max_chunk=10)
    assert dec.feed(b"3;name=v\r\nabc\r\n0\r\nX-T: 1\r\n\r\n") == [b"abc"]
    assert dec.state is ChunkState.DONE


@pytest.mark.parametrize(
    "body,status",
    [
        (b"b\r\n" + b"x" * 11 + b"\r\n", 413),
        (b"zz\r\n", 400),
        (b"-1\r\n", 400),
        (b"3\r\nabcXY", 400),
        (b"3\nabc\r\n", 400),
        (b"0\r\nbad trailer\r\n\r\n", 400),
        (b"1" * 2000, 400),
        (b"0\r\n\r\nextra", 400),
    ],
)
def test_chunked_rejects(body, status):
    with pytest.raises(HttpError) as info:
        ChunkedDecoder(max_chunk=10).feed(body)
    assert info.value.status == status


def test_parse_chunk_size():
    assert parse_chunk_size(b"1A\r\n", 100) == 26
    with pytest.raises(HttpError):
        parse_chunk_size(b"1A", 100)
    with pytest.raises(ValueError):
        encode_chunk(b"")


# -- fuzzing ---------------------------------------------------------------------------------

_VALID = b"POST /minipool/s HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 12\r\nUser-Agent: x/1\r\n\r\n"


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_heads_raise_only_http_error(data):
    for parse in (parse_request, parse_response):
        try:
            parse(data + b"\r\n\r\n")
        except HttpError as exc:
            assert 400 <= exc.status < 600


@FUZZ
@given(st.integers(0, len(_VALID) - 1), st.binary(min_size=1, max_size=4))
def test_fuzz_mutated_heads(pos, junk):
    data = _VALID[:pos] + junk + _VALID[pos + 1 :]
    try:
        req = parse_request(data)
    except HttpError:
        return
    # Whatever parses must survive a format/parse round trip unchanged.
    again = parse_request(format_request(req.method, req.target, req.headers.items()))
    assert again.headers.items() == req.headers.items() and again.target == req.target


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=50), max_size=8), st.data())
def test_fuzz_chunked_any_split(chunks, data):
    body = b"".join(b"".join(encode_chunk(c)) for c in chunks) + LAST_CHUNK
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
    dec = ChunkedDecoder(max_chunk=50)
    out, prev = [], 0
    for cut in cuts + [len(body)]:
        out += dec.feed(body[prev:cut])
        prev = cut
    assert out == chunks and dec.done


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_chunked_garbage(data):
    try:
        ChunkedDecoder(max_chunk=64).feed(data)
    except HttpError as exc:
        assert exc.status in (400, 413, 431)
