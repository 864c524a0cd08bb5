"""Tests for minipool.codecs: round trips, size limits, bad input, the registry, plug-ins."""

from __future__ import annotations

import bz2
import gzip
import importlib.metadata
import lzma
import sys
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipool import codecs
from minipool.codecs import Codec, available_codecs, get_codec, register_codec
from minipool.errors import CodecError, DecompressionBomb, MinipoolError, MissingExtra

BUILTIN = ["none", "gzip", "deflate", "lzma", "bz2", "zstd"]
COMPRESSED = [n for n in BUILTIN if n != "none"]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def zeros_100mb() -> dict[str, bytes]:
    """100 MB of zeros compressed by each codec (made once: compressing it takes a moment)."""
    data = bytes(100 * MB)
    return {name: get_codec(name).compress(data) for name in COMPRESSED}


@pytest.mark.parametrize("name", BUILTIN)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_round_trip_random_bytes(name: str, data: bytes) -> None:
    codec = get_codec(name)
    assert codec.decompress(codec.compress(data), len(data)) == data


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_compress_accepts_any_buffer(name: str, kind: type) -> None:
    data = b"minipool " * 5000
    codec = get_codec(name)
    packed = codec.compress(kind(data))
    assert codec.decompress(kind(packed), len(data)) == data
    if name != "none":
        assert len(packed) < len(data) // 10


@pytest.mark.parametrize("name", BUILTIN)
def test_output_exactly_at_the_limit_is_allowed(name: str) -> None:
    data = b"abc" * 1000
    codec = get_codec(name)
    assert codec.decompress(codec.compress(data), len(data)) == data
    with pytest.raises(DecompressionBomb) as info:
        codec.decompress(codec.compress(data), len(data) - 1)
    assert info.value.codec == name and info.value.limit == len(data) - 1


@pytest.mark.parametrize("name", COMPRESSED)
def test_bomb_is_refused(name: str, zeros_100mb: dict[str, bytes]) -> None:
    packed = zeros_100mb[name]
    assert len(packed) < MB  # it really is a bomb: under 1 MB in, 100 MB out
    with pytest.raises(DecompressionBomb) as info:
        get_codec(name).decompress(packed, MB)
    assert info.value.limit == MB
    assert isinstance(info.value, CodecError)


def test_none_enforces_the_limit_too() -> None:
    with pytest.raises(DecompressionBomb):
        get_codec("none").decompress(bytes(MB + 1), MB)


def test_zstd_frame_without_declared_size_is_bounded() -> None:
    zstandard = pytest.importorskip("zstandard")
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(8 * MB))
    assert zstandard.frame_content_size(streamed) == -1
    codec = get_codec("zstd")
    with pytest.raises(DecompressionBomb):
        codec.decompress(streamed, MB)
    assert codec.decompress(streamed, 8 * MB) == bytes(8 * MB)
    with pytest.raises(CodecError) as info:
        codec.decompress(streamed[:-4], 8 * MB)
    assert not isinstance(info.value, DecompressionBomb)


def test_zstd_header_that_lies_about_its_size_is_an_error() -> None:
    zstandard = pytest.importorskip("zstandard")
    frame = bytearray(zstandard.ZstdCompressor().compress(bytes(range(200))))
    # Frame header: 4-byte magic, then the descriptor byte. Single-segment flag (0x20) with a
    # zero size flag means the content size is the one byte right after it.
    assert frame[4] & 0xE0 == 0x20 and frame[5] == 200
    frame[5] = 100
    forged = bytes(frame)
    assert zstandard.frame_content_size(forged) == 100
    with pytest.raises(CodecError):
        get_codec("zstd").decompress(forged, MB)


@pytest.mark.parametrize("name", COMPRESSED)
def test_truncated_input_is_a_codec_error(name: str) -> None:
    codec = get_codec(name)
    packed = codec.compress(bytes(range(256)) * 64)
    for cut in (1, len(packed) // 2, len(packed) - 1):
        with pytest.raises(CodecError) as info:
            codec.decompress(packed[:cut], MB)
        assert not isinstance(info.value, DecompressionBomb)


@pytest.mark.parametrize("name", COMPRESSED)
def test_empty_input_is_a_codec_error(name: str) -> None:
    with pytest.raises(CodecError):
        get_codec(name).decompress(b"", MB)


@pytest.mark.parametrize("name", ["lzma", "bz2"])
def test_trailing_garbage_is_refused_where_the_library_refuses_it(name: str) -> None:
    codec = get_codec(name)
    with pytest.raises(CodecError):
        codec.decompress(codec.compress(b"hello") + b"junk", MB)


@pytest.mark.parametrize("name", ["gzip", "deflate", "zstd"])
def test_trailing_bytes_are_ignored_like_the_one_shot_library_call(name: str) -> None:
    codec = get_codec(name)
    packed = codec.compress(b"hello" * 1000) + b"junk"
    assert codec.decompress(packed, MB) == b"hello" * 1000
    assert codec.decompress(packed, 5000) == b"hello" * 1000  # the bounded path agrees


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_both_zlib_paths_refuse_truncation(name: str) -> None:
    codec = get_codec(name)
    data = bytes(range(256)) * 256
    packed = codec.compress(data)[:-10]
    with pytest.raises(CodecError):
        codec.decompress(packed, MB)  # small input: the one-shot path
    with pytest.raises(CodecError):
        codec.decompress(packed, len(data))  # limit near the output size: the bounded path


@pytest.mark.parametrize("name", COMPRESSED)
@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=512))
def test_garbage_never_escapes_as_another_exception(name: str, garbage: bytes) -> None:
    try:
        get_codec(name).decompress(garbage, 64 * 1024)
    except CodecError:
        pass


@pytest.mark.parametrize("name", COMPRESSED)
def test_flipped_bits_are_detected(name: str) -> None:
    codec = get_codec(name)
    packed = bytearray(codec.compress(b"The quick brown fox jumps over the lazy dog. " * 200))
    packed[len(packed) // 2] ^= 0xFF
    with pytest.raises(CodecError):
        result = codec.decompress(bytes(packed), MB)
        # zstd frames carry no checksum by default: a flip may decode to other bytes.
        if name == "zstd" and result != b"The quick brown fox jumps over the lazy dog. " * 200:
            raise CodecError("different output")


def test_formats_are_the_standard_ones() -> None:
    text = b"interoperable " * 100
    assert gzip.decompress(get_codec("gzip").compress(text)) == text
    assert zlib.decompress(get_codec("deflate").compress(text)) == text  # RFC 1950, as in HTTP
    assert lzma.decompress(get_codec("lzma").compress(text)) == text
    assert bz2.decompress(get_codec("bz2").compress(text)) == text
    assert get_codec("gzip").decompress(gzip.compress(text, 9), MB) == text
    assert get_codec("deflate").decompress(zlib.compress(text, 9), MB) == text


def test_unknown_codec_names_the_known_ones() -> None:
    with pytest.raises(CodecError) as info:
        get_codec("snappy")
    message = str(info.value)
    assert "snappy" in message
    for name in ("none", "gzip", "deflate", "lzma", "bz2"):
        assert name in message


def test_zstd_without_zstandard_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codecs, "CODECS", codecs.CODECS.copy())
    codecs.CODECS.add_lazy("zstd", codecs._zstd_codec)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(MissingExtra) as info:
        get_codec("zstd")
    assert info.value.extra == "zstd" and info.value.package == "zstandard"
    assert "minipool[zstd]" in str(info.value)
    assert isinstance(info.value, MinipoolError)
    assert "zstd" not in available_codecs()
    assert "gzip" in available_codecs()


def test_available_codecs_lists_the_builtins() -> None:
    names = available_codecs()
    for name in ("none", "gzip", "deflate", "lzma", "bz2"):
        assert name in names
    assert ("zstd" in names) == (_has_zstandard())


def _has_zstandard() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _reversing_codec(name: str = "rev") -> Codec:
    def decompress(data: bytes, max_size: int) -> bytes:
        if len(data) > max_size:
            raise DecompressionBomb(name, max_size)
        return bytes(data)[::-1]

    return Codec(name, lambda data: bytes(data)[::-1], decompress)


def test_register_and_replace_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codecs, "CODECS", codecs.CODECS.copy())
    rev = _reversing_codec()
    register_codec(rev)
    assert get_codec("rev") is rev
    assert "rev" in available_codecs()
    with pytest.raises(ValueError):
        register_codec(_reversing_codec())
    other = _reversing_codec()
    register_codec(other, replace=True)
    assert get_codec("rev") is other
    with pytest.raises(ValueError):
        register_codec(_reversing_codec("gzip"))
    with pytest.raises(ValueError):
        register_codec(_reversing_codec("zstd"))  # a built-in, even before first use
    with pytest.raises(ValueError):
        register_codec(_reversing_codec(""))
    with pytest.raises(TypeError):
        register_codec("rev")  # type: ignore[arg-type]
    faster_gzip = Codec("gzip", codecs.get_codec("gzip").compress, codecs.get_codec("gzip").decompress)
    register_codec(faster_gzip, replace=True)
    assert get_codec("gzip") is faster_gzip


class _FakeEntryPoint:
    def __init__(self, name: str, obj: object) -> None:
        self.name, self.value, self._obj = name, f"fake:{name}", obj

    def load(self) -> object:
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


def test_entry_points_are_loaded(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(codecs, "CODECS", codecs.CODECS.copy())
    codecs.CODECS.entry_points_loaded = False
    plain = _reversing_codec("br")
    groups: list[str] = []

    def fake_entry_points(*, group: str) -> list[_FakeEntryPoint]:
        groups.append(group)
        return [
            _FakeEntryPoint("br", plain),  # a Codec object
            _FakeEntryPoint("lz4", lambda: _reversing_codec("lz4")),  # a factory
            _FakeEntryPoint("gzip", _reversing_codec("gzip")),  # may not shadow a built-in
            _FakeEntryPoint("broken", ImportError("no module named brotli")),
            _FakeEntryPoint("wrong", lambda: "not a codec"),
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    with caplog.at_level("WARNING", logger="minipool.codecs"):
        assert get_codec("br") is plain
    assert groups == ["minipool.codecs"]
    assert get_codec("lz4").decompress(get_codec("lz4").compress(b"abc"), 10) == b"abc"
    assert get_codec("gzip").compress(b"abc") != b"cba"
    names = available_codecs()
    assert {"br", "lz4"} <= set(names) and "broken" not in names and "wrong" not in names
    assert "broken" in caplog.text and "wrong" in caplog.text
    assert groups == ["minipool.codecs"]  # loaded once, not on every lookup
    with pytest.raises(CodecError):
        get_codec("broken")
