"""The wire envelope and the HMAC handshake, driven with plain bytes (sans-I/O)."""

import pickle
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipool.errors import AuthenticationError, CodecError, DamagedMessage, ProtocolError
from minipool.wire import (
    HEAD_SIZE,
    VERSION,
    VIEW_MIN,
    ClientAuth,
    Format,
    Kind,
    Message,
    ServerAuth,
    decode,
    decode_body,
    encode,
    encode_body,
    encode_buffers,
    encode_parts,
)


def test_round_trip_keeps_every_field():
    msg = Message(
        Kind.SUBMIT,
        2**64 - 1,
        b"\x00body",
        fmt=Format.PICKLE,
        codec="gzip",
        headers={"priority": 3, "timeout": 1.5},
    )
    assert decode(encode(msg)) == msg


def test_hot_path_message_has_no_headers_and_a_22_byte_head():
    data = encode(Message(Kind.TASK, 7, b"xyz", fmt=Format.PICKLE))
    assert HEAD_SIZE == 22 and len(data) == HEAD_SIZE + len("none") + 3


def sealed(fields, meta=b"", body=b""):
    """A message with the head ``fields`` (kind, fmt, clen, hlen, id), the codec name and
    headers ``meta``, ``body``, and a correct CRC-32: the body's, continued over the bytes
    from the end of the CRC to the body."""
    covered = struct.pack("!BBBIQ", *fields) + meta
    crc = zlib.crc32(covered, zlib.crc32(body))
    return struct.pack("!2sBI", b"MP", VERSION, crc) + covered + body


def test_the_crc_covers_every_byte_after_itself_body_first():
    data = encode(Message(Kind.RESULT, 9, b"body", fmt=Format.PICKLE, headers={"a": 1}))
    assert data == sealed((Kind.RESULT, Format.PICKLE, 4, 7, 9), b'none{"a":1}', b"body")
    assert decode(data).body_crc == zlib.crc32(b"body")


def test_a_forwarded_body_keeps_its_crc_and_gets_a_correct_envelope():
    received = decode(encode_parts(Kind.SUBMIT, 3, b"call", Format.PICKLE, "none", None))
    forwarded = encode_parts(
        Kind.TASK, 77, received.body, received.fmt, received.codec, {"timeout": 2.0}, received.body_crc
    )
    assert forwarded == encode(Message(Kind.TASK, 77, b"call", fmt=Format.PICKLE, headers={"timeout": 2.0}))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "bad magic"),
        (b"XX" + bytes(20), "bad magic"),
        (b"MP\x09" + bytes(19), "version"),
        (b"MP\x01" + bytes(19), "version 1"),  # the envelope before the CRC
        (b"MP\x02" + bytes(10), "shorter"),
        (sealed((0xFF, 0, 0, 0, 0)), "unknown message kind"),
    ],
)
def test_malformed_heads_are_protocol_errors(data, reason):
    with pytest.raises(ProtocolError, match=reason):
        decode(data)


def test_lengths_past_the_end_are_refused():
    with pytest.raises(ProtocolError, match="past the end"):
        decode(sealed((Kind.TASK, 0, 4, 1000, 1), b"none{}"))  # (damaged, most likely)


def test_headers_must_be_a_json_object():
    with pytest.raises(ProtocolError, match="JSON object"):
        decode(sealed((Kind.TASK, 0, 0, 2, 1), b"[]"))


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=3000),
    st.integers(0, 10**6),
    st.integers(0, 7),
    st.sampled_from([None, {"timeout": 1.5}]),
)
def test_any_flipped_bit_is_a_damaged_message_never_a_wrong_one(body, pos, bit, headers):
    data = bytearray(encode(Message(Kind.TASK, 12345, body, fmt=Format.PICKLE, headers=headers)))
    pos %= len(data)
    data[pos] ^= 1 << bit
    # A flip in the magic or the version reads as another protocol; anywhere after, as damage.
    expected = ProtocolError if pos < 3 else DamagedMessage
    with pytest.raises(expected):
        decode(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_message_or_a_protocol_error(data):
    try:
        decode(data)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 200), st.integers(0, 255))
def test_mutated_messages_give_a_message_or_a_protocol_error(body, pos, byte):
    data = bytearray(encode(Message(Kind.RESULT, 5, body, headers={"a": 1})))
    data[pos % len(data)] = byte
    try:
        decode(bytes(data))
    except ProtocolError:
        pass


def test_pickle_body_is_refused_from_an_untrusted_peer():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled an untrusted body",))

    msg = Message(Kind.SUBMIT, 1, pickle.dumps(Boom()), fmt=Format.PICKLE)
    with pytest.raises(ProtocolError, match="unauthenticated"):
        decode_body(msg, trusted=False)


def test_body_formats_and_codecs_round_trip():
    for fmt, value in [(Format.JSON, {"a": [1, 2]}), (Format.PICKLE, {1, 2}), (Format.RAW, b"raw")]:
        for codec in ("none", "gzip"):
            body = encode_body(value, fmt, codec)
            assert decode_body(Message(Kind.RESULT, 1, body, fmt=fmt, codec=codec), trusted=True) == value


def test_decompression_bomb_in_a_body_is_refused():
    body = encode_body(b"\0" * 5_000_000, Format.RAW, "gzip")
    with pytest.raises(CodecError):
        decode_body(
            Message(Kind.RESULT, 1, body, fmt=Format.RAW, codec="gzip"), trusted=True, max_size=1_000_000
        )


# -- the handshake ---------------------------------------------------------------------------


def handshake(server_key, client_key):
    server, client = ServerAuth(server_key), ClientAuth(client_key)
    proof = client.answer(server.challenge())
    welcome = server.verify(proof)
    client.check(welcome)
    return server, client


def test_same_key_authenticates_both_sides():
    server, client = handshake(b"k" * 32, b"k" * 32)
    assert server.authenticated and client.authenticated


def test_wrong_client_key_is_refused_by_the_server():
    server, client = ServerAuth(b"right"), ClientAuth(b"wrong")
    proof = client.answer(server.challenge())
    with pytest.raises(AuthenticationError):
        server.verify(proof)
    assert not server.authenticated


def test_a_fake_server_without_the_key_is_detected_by_the_client():
    client = ClientAuth(b"right")
    impostor = ServerAuth(b"guess")
    client.answer(impostor.challenge())
    # The impostor cannot produce a WELCOME for the client's nonce; replaying anything fails.
    with pytest.raises((AuthenticationError, ProtocolError)):
        client.check(encode(Message(Kind.WELCOME, body=b"\0" * 32)))


def test_a_client_proof_cannot_be_reflected_as_a_server_proof():
    key = b"shared"
    client = ClientAuth(key)
    server = ServerAuth(key)
    proof = decode(client.answer(server.challenge()))
    # An attacker replays the client's own HMAC back as the WELCOME: roles differ, so it fails.
    with pytest.raises(AuthenticationError):
        client.check(encode(Message(Kind.WELCOME, body=proof.body[:32])))


def test_a_non_minipool_server_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        ClientAuth(b"k").answer(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def test_a_handshake_message_of_the_wrong_size_says_so():
    server, client = ServerAuth(b"k"), ClientAuth(b"k")
    with pytest.raises(ProtocolError, match="a PROOF of 3 bytes, not"):
        server.verify(encode(Message(Kind.PROOF, body=b"abc")))
    with pytest.raises(ProtocolError, match="a CHALLENGE of 0 bytes, not"):
        client.answer(encode(Message(Kind.CHALLENGE)))
    with pytest.raises(ProtocolError, match="expected a PROOF message, got HELLO"):
        server.verify(encode(Message(Kind.HELLO)))


def test_encode_buffers_is_encode_parts_unjoined_with_the_body_untouched():
    body = bytearray(pickle.dumps(b"x" * 200_000))
    for codec, headers in (("none", None), ("zlib", {"trace": "t"})):
        head, sent = encode_buffers(Kind.RESULT, 9, body, Format.PICKLE, codec, headers)
        assert sent is body  # handed on as it is: never copied behind its head
        assert head + sent == encode_parts(Kind.RESULT, 9, body, Format.PICKLE, codec, headers)


def test_a_large_pickled_body_is_decoded_as_a_view_and_a_small_one_as_bytes():
    value = b"y" * VIEW_MIN
    large = decode(encode(Message(Kind.TASK, 1, pickle.dumps(value), fmt=Format.PICKLE)), view=True)
    assert isinstance(large.body, memoryview)
    assert pickle.loads(large.body) == value
    assert decode_body(large, trusted=True) == value
    assert large == Message(Kind.TASK, 1, pickle.dumps(value), fmt=Format.PICKLE)
    small = decode(encode(Message(Kind.TASK, 1, pickle.dumps(b"y"), fmt=Format.PICKLE)), view=True)
    assert type(decode(encode(large)).body) is bytes  # a view only when asked for
    assert type(small.body) is bytes
    # A large body in another format stays bytes: JSON and raw bodies are read as bytes.
    raw = decode(
        encode(Message(Kind.STATUS_REPLY, 1, b"[" + b"1," * VIEW_MIN + b"1]", fmt=Format.JSON)), view=True
    )
    assert type(raw.body) is bytes and len(decode_body(raw, trusted=False)) == VIEW_MIN + 1
