"""The sans-I/O WebSocket frame layer: RFC 6455 examples, every rule it enforces, and fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipool.errors import FrameTooLarge, ProtocolError
from minipool.transports.wsframes import (
    CloseCode,
    Frame,
    FrameParser,
    Message,
    MessageTooBig,
    Opcode,
    WebSocketProtocolError,
    apply_mask,
    binary_frame_cutter,
    frame_header,
    parse_close,
    parse_frame,
    serialize,
    serialize_close,
)
from minipool.transports.wsmask import masked_copy
from minipool.transports.wsmessages import MessageAssembler

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # the masking key of RFC 6455 §5.7's examples


def parse_all(data: bytes, *, masked: bool, max_size: int | None = None) -> list[Frame]:
    parser = FrameParser(masked=masked, max_size=max_size)
    frames = parser.feed(data)
    assert parser.pending == 0
    return frames


def naive_mask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


# -- the examples of RFC 6455 §5.7 ---------------------------------------------------------------


def test_rfc_unmasked_text():
    assert parse_all(b"\x81\x05Hello", masked=False) == [Frame(Opcode.TEXT, b"Hello")]
    assert serialize(Frame(Opcode.TEXT, b"Hello")) == b"\x81\x05Hello"


def test_rfc_masked_text():
    wire = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert serialize(Frame(Opcode.TEXT, b"Hello"), KEY) == wire
    assert parse_all(wire, masked=True) == [Frame(Opcode.TEXT, b"Hello")]


def test_rfc_fragmented_text_and_ping():
    frames = parse_all(b"\x01\x03Hel" + b"\x89\x05Hello" + b"\x80\x02lo", masked=False)
    assert frames == [
        Frame(Opcode.TEXT, b"Hel", fin=False),
        Frame(Opcode.PING, b"Hello"),
        Frame(Opcode.CONT, b"lo"),
    ]
    assembler = MessageAssembler(100)
    assert assembler.feed(frames[0]) is None
    assert assembler.feed(frames[2]) == Message(Opcode.TEXT, b"Hello")


def test_rfc_extended_lengths():
    assert frame_header(Opcode.BINARY, 256) == b"\x82\x7e\x01\x00"
    assert frame_header(Opcode.BINARY, 65536) == b"\x82\x7f" + struct.pack("!Q", 65536)
    assert frame_header(Opcode.BINARY, 125) == b"\x82\x7d"
    assert frame_header(Opcode.BINARY, 65535) == b"\x82\x7e\xff\xff"


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70001])
@pytest.mark.parametrize("masked", [False, True])
def test_roundtrip_sizes(size, masked):
    frame = Frame(Opcode.BINARY, bytes(range(256)) * (size // 256) + b"z" * (size % 256))
    assert parse_all(serialize(frame, masked), masked=masked) == [frame]


@given(st.binary(max_size=20000), st.binary(min_size=4, max_size=4))
@settings(max_examples=200, deadline=None)
def test_mask_matches_the_definition(data, key):
    assert apply_mask(data, key) == naive_mask(data, key)
    assert apply_mask(apply_mask(data, key), key) == data
    assert masked_copy(memoryview(data), memoryview(key)) == naive_mask(data, key)


@given(st.binary(max_size=65535), st.one_of(st.none(), st.binary(min_size=4, max_size=4)))
@settings(max_examples=100, deadline=None)
def test_the_small_binary_frame_is_the_general_serializers_frame(data, key):
    from minipool.transports.wsframes import small_binary_frame

    assert small_binary_frame(data, key) == serialize(Frame(Opcode.BINARY, data), key or False)
    assert small_binary_frame(memoryview(data), key) == small_binary_frame(data, key)


def test_mask_long_payload_with_remainder():
    data = bytes(range(256)) * 4100 + b"tail!"  # several 8 KiB blocks and a ragged end
    assert apply_mask(data, KEY) == naive_mask(data, KEY)
    assert apply_mask(memoryview(data), KEY) == naive_mask(data, KEY)


def test_a_connections_mask_keys_are_fresh_past_each_batch_and_its_own():
    from minipool.transports.wsmask import MaskKeys

    one, other = MaskKeys(), MaskKeys()
    keys = [one() for _ in range(3000)]  # crosses two refills of the batch
    assert {len(k) for k in keys} == {4}
    assert len(set(keys)) > 2990  # 32 random bits each: a repeat or two at most, by chance
    assert keys[:1024] != [other() for _ in range(1024)]


def test_threads_sharing_a_connection_draw_distinct_keys():
    import threading

    from minipool.transports.wsmask import MaskKeys

    keys = MaskKeys()
    drawn: list[list[bytes]] = [[] for _ in range(4)]

    def draw(mine):
        for _ in range(2000):
            mine.append(keys())

    threads = [threading.Thread(target=draw, args=(mine,)) for mine in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(map(len, drawn)) == 8000
    handed = [id(k) for mine in drawn for k in mine]  # all alive, so one id per key object
    assert len(set(handed)) == 8000  # no key was handed to two frames


def test_random_mask_keys_differ():
    wires = {serialize(Frame(Opcode.BINARY, b"same"), True) for _ in range(8)}
    assert len(wires) > 1


# -- every rule, with its close code --------------------------------------------------------------


def code_of(data: bytes, *, masked: bool, max_size: int | None = None) -> int:
    with pytest.raises(WebSocketProtocolError) as info:
        FrameParser(masked=masked, max_size=max_size).feed(data)
    return info.value.code


def test_client_frames_must_be_masked():
    assert code_of(b"\x82\x02hi", masked=True) == CloseCode.PROTOCOL_ERROR


def test_server_frames_must_not_be_masked():
    assert code_of(serialize(Frame(Opcode.BINARY, b"hi"), KEY), masked=False) == 1002


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10])
def test_reserved_bits(bit):
    assert code_of(bytes([0x82 | bit, 0x00]), masked=False) == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes(opcode):
    assert code_of(bytes([0x80 | opcode, 0x00]), masked=False) == 1002


def test_fragmented_control_frame():
    assert code_of(b"\x09\x00", masked=False) == 1002  # PING without FIN


def test_control_frame_over_125_bytes():
    assert code_of(b"\x89\x7e\x00\x7e" + b"x" * 126, masked=False) == 1002


def test_giant_length_is_refused_before_the_payload():
    wire = b"\x82\x7f" + struct.pack("!Q", 2**31)  # announces 2 GB, sends none of it
    parser = parse_frame(masked=False, max_size=1 << 20)
    assert next(parser) == 2
    assert parser.send(wire[:2]) == 8
    with pytest.raises(MessageTooBig) as info:
        parser.send(wire[2:])
    assert info.value.code == CloseCode.MESSAGE_TOO_BIG
    assert isinstance(info.value, FrameTooLarge) and info.value.size == 2**31


def test_length_with_top_bit_set():
    assert code_of(b"\x82\x7f" + struct.pack("!Q", 2**63), masked=False) == 1002


def test_control_frames_ignore_the_data_size_limit():
    assert parse_all(b"\x89\x05Hello", masked=False, max_size=0) == [Frame(Opcode.PING, b"Hello")]


def test_continuation_without_a_message():
    with pytest.raises(WebSocketProtocolError) as info:
        MessageAssembler(100).feed(Frame(Opcode.CONT, b"x"))
    assert info.value.code == 1002


def test_new_message_inside_a_fragmented_one():
    assembler = MessageAssembler(100)
    assembler.feed(Frame(Opcode.BINARY, b"a", fin=False))
    with pytest.raises(WebSocketProtocolError) as info:
        assembler.feed(Frame(Opcode.BINARY, b"b"))
    assert info.value.code == 1002


def test_message_size_limit_across_fragments():
    assembler = MessageAssembler(10)
    assembler.feed(Frame(Opcode.BINARY, b"123456", fin=False))
    assert assembler.budget == 4
    with pytest.raises(MessageTooBig) as info:
        assembler.feed(Frame(Opcode.CONT, b"12345"))
    assert info.value.code == 1009


def test_single_frame_over_the_limit():
    with pytest.raises(MessageTooBig):
        MessageAssembler(3).feed(Frame(Opcode.BINARY, b"1234"))


def test_utf8_split_across_fragments_is_fine():
    text = "né 🚀".encode()
    assembler = MessageAssembler(100)
    pieces = [text[:2], text[2:5], text[5:]]  # cuts inside multi-byte sequences
    assert assembler.feed(Frame(Opcode.TEXT, pieces[0], fin=False)) is None
    assert assembler.feed(Frame(Opcode.CONT, pieces[1], fin=False)) is None
    assert assembler.feed(Frame(Opcode.CONT, pieces[2])) == Message(Opcode.TEXT, text)


def test_invalid_utf8_fails_at_the_first_bad_fragment():
    assembler = MessageAssembler(100)
    assembler.feed(Frame(Opcode.TEXT, b"ok", fin=False))
    with pytest.raises(WebSocketProtocolError) as info:
        assembler.feed(Frame(Opcode.CONT, b"\xff", fin=False))  # not yet the last fragment
    assert info.value.code == CloseCode.INVALID_DATA


def test_truncated_utf8_at_the_end_of_a_message():
    assembler = MessageAssembler(100)
    assembler.feed(Frame(Opcode.TEXT, b"\xe2\x82", fin=False))
    with pytest.raises(WebSocketProtocolError) as info:
        assembler.feed(Frame(Opcode.CONT, b""))
    assert info.value.code == 1007


def test_invalid_utf8_single_frame_and_binary_is_not_checked():
    with pytest.raises(WebSocketProtocolError) as info:
        MessageAssembler(100).feed(Frame(Opcode.TEXT, b"\xc3\x28"))
    assert info.value.code == 1007
    assert MessageAssembler(100).feed(Frame(Opcode.BINARY, b"\xc3\x28")).data == b"\xc3\x28"


# -- close payloads ------------------------------------------------------------------------------


def test_close_payloads():
    assert parse_close(b"") == (CloseCode.NO_STATUS_RCVD, "")
    assert parse_close(serialize_close(1000, "bye")) == (CloseCode.NORMAL_CLOSURE, "bye")
    assert parse_close(serialize_close(4321, "app")) == (4321, "app")
    assert serialize_close(CloseCode.NO_STATUS_RCVD) == b""
    assert len(serialize_close(1000, "é" * 200)) <= 125


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_close_codes_nobody_may_send(code):
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close(struct.pack("!H", code))
    assert info.value.code == 1002


def test_close_payload_errors():
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close(b"\x03")
    assert info.value.code == 1002
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close(b"\x03\xe8\xff")
    assert info.value.code == 1007


# -- fuzzing: any bytes give frames or a ProtocolError, never anything else ---------------------


def feed_safely(data: bytes, masked: bool, max_size: int | None, chunk: int) -> list[Frame]:
    parser = FrameParser(masked=masked, max_size=max_size)
    frames: list[Frame] = []
    try:
        for i in range(0, len(data), chunk):
            frames += parser.feed(data[i : i + chunk])
    except WebSocketProtocolError as exc:
        assert isinstance(exc, ProtocolError) and exc.code in (1002, 1007, 1009)
    return frames


@given(st.binary(max_size=600), st.booleans(), st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_fuzz_random_bytes(data, masked, chunk):
    for frame in feed_safely(data, masked, 300, chunk):
        assert isinstance(frame.opcode, Opcode)


frames_strategy = st.builds(
    Frame,
    st.sampled_from([Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG, Opcode.CLOSE]),
    st.binary(max_size=200),
    st.booleans(),
)


@given(
    st.lists(frames_strategy, max_size=5),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
    st.integers(1, 50),
)
@settings(max_examples=200, deadline=None)
def test_fuzz_mutated_frames(frames, masked, mutations, chunk):
    wire = bytearray(b"".join(serialize(f, KEY if masked else False) for f in frames))
    for pos, value in mutations:
        if wire:
            wire[pos % len(wire)] = value
    parsed = feed_safely(bytes(wire), masked, 1000, chunk)
    # and the assembler, fed what parsed, also ends in messages or a ProtocolError
    assembler = MessageAssembler(1000)
    try:
        for frame in parsed:
            if frame.opcode < 8:
                assembler.feed(frame)
            elif frame.opcode is Opcode.CLOSE:
                parse_close(frame.payload)
    except WebSocketProtocolError:
        pass


@given(st.lists(frames_strategy, max_size=6), st.booleans(), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_valid_frames_survive_any_chunking(frames, masked, chunk):
    frames = [f if f.opcode < 8 else Frame(f.opcode, f.payload[:125]) for f in frames]
    wire = b"".join(serialize(f, masked) for f in frames)
    assert feed_safely(wire, masked, None, chunk) == frames


# -- the fast path for a whole BINARY frame ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    opcode=st.sampled_from([Opcode.BINARY, Opcode.TEXT, Opcode.CONT, Opcode.PING]),
    payload=st.binary(max_size=300),
    fin=st.booleans(),
    rsv1=st.booleans(),
    masked=st.booleans(),
    key_masked=st.booleans(),
    max_size=st.integers(0, 400),
    before=st.binary(max_size=3),
    after=st.binary(max_size=3),
)
def test_the_cutter_agrees_with_parse_frame_or_leaves_the_frame_to_it(
    opcode, payload, fin, rsv1, masked, key_masked, max_size, before, after
):
    if opcode >= 8:
        payload, fin = payload[:125], True
    wire = serialize(Frame(opcode, payload, fin=fin, rsv1=rsv1), KEY if key_masked else False)
    cut = binary_frame_cutter(masked=masked, max_size=max_size)
    data = before + wire + after
    found = cut(data, len(before))
    if found is None:
        return
    # Only what parse_frame accepts as one whole BINARY message, with the same payload...
    end, got = found
    assert end == len(before) + len(wire)
    assert parse_all(wire, masked=masked, max_size=max_size) == [Frame(Opcode.BINARY, payload)]
    assert got == payload
    # ...and never a frame that has not wholly arrived.
    for short in range(len(before), end):
        assert cut(memoryview(data[:short]), len(before)) is None


def test_the_cutter_takes_the_common_frames():
    for size in (0, 1, 125, 126, 1024, 65535):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        masked_wire = serialize(Frame(Opcode.BINARY, payload), KEY)
        assert binary_frame_cutter(masked=True, max_size=size)(masked_wire, 0) == (len(masked_wire), payload)
        plain_wire = serialize(Frame(Opcode.BINARY, payload))
        cut = binary_frame_cutter(masked=False, max_size=1 << 20)
        assert cut(bytearray(b"xy" + plain_wire), 2) == (len(plain_wire) + 2, payload)
    over = serialize(Frame(Opcode.BINARY, b"12345"), KEY)
    assert binary_frame_cutter(masked=True, max_size=4)(over, 0) is None  # parse_frame says 1009
