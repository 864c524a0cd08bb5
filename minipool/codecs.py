"""Compression codecs: a name -> compress / decompress pair, a registry, and a size limit.

Technique: *compressing what goes over the wire* (seed 000 §3.2 compares gzip, deflate and
brotli for transfer; minipool adds lzma, bz2 and zstd). Each message names its codec, so a
sender picks per message what pays: text and JSON logs shrink 3-7x, random or already
compressed bytes do not shrink at all and should travel as ``none``.

How it is built, and why:

* A :class:`Codec` is a frozen dataclass of two plain functions. The hot path is
  ``get_codec(name)`` -- one dict lookup -- followed by a direct call of a function that is
  either the library's own (``functools.partial(zlib.compress, ...)``) or a thin wrapper around
  it, so the registry costs nothing measurable (``python -m minipool.bench codecs`` prints the
  overhead against calling zlib, lzma, bz2 and zstandard directly).
* Decompression is *bounded*: a peer controls the input, and 100 KB of zeros in gzip unpacks
  to 100 MB. Every decompressor is driven through its incremental API with an output limit
  (``decompressobj().decompress(data, max_length)``), so no more than ``max_size + 1`` bytes
  ever exist in memory before :class:`~minipool.errors.DecompressionBomb` is raised -- except
  where the input is too short to inflate past the limit at all (deflate cannot exceed 1032:1;
  a zstd frame declares its size), where the one-shot C call is provably safe and fastest.
  Truncated or corrupt input raises :class:`~minipool.errors.CodecError`. Bytes after the end
  of the compressed stream are treated as each library's one-shot function treats them:
  ignored by gzip, deflate and zstd, an error for lzma and bz2.
* Levels are chosen for a wire, not for an archive: a codec that compresses slower than the
  network sends has made the transfer slower. docs/codecs.md has the measurements.
* zstd needs the optional ``zstandard`` package, imported only when ``zstd`` is first asked
  for; without it the error names the extra to install. Third-party codecs (brotli, lz4, ...)
  plug in with :func:`register_codec` or the ``minipool.codecs`` entry-point group; the table
  of names, :data:`CODECS`, is a :class:`~minipool.plugins.Plugins`, as the transports' is.
"""

from __future__ import annotations

import bz2
import functools
import logging
import lzma
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import CodecError, DecompressionBomb, MissingExtra
from .plugins import Plugins

__all__ = [
    "CODECS",
    "Codec",
    "DEFAULT_MAX_SIZE",
    "LEVELS",
    "register_codec",
    "get_codec",
    "available_codecs",
]

log = logging.getLogger(__name__)

#: Largest output a decompressor produces unless told otherwise (64 MiB, the transports' limit).
DEFAULT_MAX_SIZE = 64 * 1024 * 1024

#: The compression level of each built-in codec: the fast end of each library's range, where
#: (measured on text and JSON logs) most of the ratio is already won at several times the speed.
LEVELS = {"gzip": 1, "deflate": 1, "lzma": 1, "bz2": 9, "zstd": 3}

#: The entry-point group third-party codecs register under.
ENTRY_POINT_GROUP = "minipool.codecs"


@dataclass(frozen=True)
class Codec:
    """A named pair of functions.

    Attributes:
        name: the name messages carry (``"gzip"``); ASCII, short.
        compress: ``compress(data) -> bytes``; accepts bytes, bytearray or memoryview.
        decompress: ``decompress(data, max_size) -> bytes``. Raises
            :class:`~minipool.errors.DecompressionBomb` rather than return more than
            ``max_size`` bytes, and :class:`~minipool.errors.CodecError` on corrupt input.
    """

    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]


# --- the built-in codecs -------------------------------------------------------------------


def _none_compress(data: bytes) -> bytes:
    return data if type(data) is bytes else bytes(data)


def _none_decompress(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    # Even the identity codec enforces the limit, so a caller can rely on it whatever the codec.
    if len(data) > max_size:
        raise DecompressionBomb("none", max_size)
    return data if type(data) is bytes else bytes(data)


# DEFLATE's longest match (258 bytes) costs at least 2 bits, so no stream inflates by more than
# 1032:1 (RFC 1951; the zlib FAQ). Below that ratio a one-shot decompress cannot be a bomb.
_DEFLATE_MAX_RATIO = 1032


def _zlib_codec(name: str, wbits: int) -> Codec:
    """gzip (wbits 31: RFC 1952 header and CRC-32) or deflate (wbits 15: RFC 1950 zlib)."""
    level = LEVELS[name]
    compress: Callable[[bytes], bytes]
    if sys.version_info >= (3, 11):
        # One C call, no Python frame: zlib.compress grew ``wbits`` in 3.11.
        compress = functools.partial(zlib.compress, level=level, wbits=wbits)
    else:  # pragma: no cover - exercised on Python 3.10 only

        def compress(data: bytes) -> bytes:
            obj = zlib.compressobj(level, zlib.DEFLATED, wbits)
            return obj.compress(data) + obj.flush()

    def decompress(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
        try:
            if len(data) * _DEFLATE_MAX_RATIO <= max_size:
                # Fast path (every message under ~64 KB with the default limit): this input
                # cannot inflate past max_size, so the one-shot C call is safe.
                return zlib.decompress(data, wbits)
            obj = zlib.decompressobj(wbits)
            out = obj.decompress(data, max_size + 1)
        except zlib.error as exc:
            raise CodecError(f"{name}: corrupt or truncated input ({exc})") from None
        if len(out) > max_size:
            raise DecompressionBomb(name, max_size)
        if not obj.eof:
            raise CodecError(f"{name}: truncated input")
        return out

    return Codec(name, compress, decompress)


def _bounded(
    name: str, make: Callable[[], Any], errors: tuple[type[BaseException], ...]
) -> Callable[[bytes, int], bytes]:
    """A decompress function over an lzma/bz2-style decompressor object with ``max_length``."""

    def decompress(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
        obj = make()
        try:
            out = obj.decompress(data, max_size + 1)
        except errors as exc:
            raise CodecError(f"{name}: corrupt input ({exc})") from None
        if len(out) > max_size:
            raise DecompressionBomb(name, max_size)
        if not obj.eof:
            raise CodecError(f"{name}: truncated input")
        if obj.unused_data:
            raise CodecError(f"{name}: {len(obj.unused_data)} bytes of trailing data")
        return out

    return decompress


def _lzma_codec() -> Codec:
    # xz container (with its CRC-64), so a flipped bit is an error, not wrong data.
    compress = functools.partial(lzma.compress, format=lzma.FORMAT_XZ, preset=LEVELS["lzma"])
    decompress = _bounded("lzma", functools.partial(lzma.LZMADecompressor, lzma.FORMAT_XZ), (lzma.LZMAError,))
    return Codec("lzma", compress, decompress)


def _bz2_codec() -> Codec:
    compress = functools.partial(bz2.compress, compresslevel=LEVELS["bz2"])
    # _bz2 reports a corrupt stream as a plain OSError ("Invalid data stream").
    decompress = _bounded("bz2", bz2.BZ2Decompressor, (OSError, ValueError))
    return Codec("bz2", compress, decompress)


def _zstd_codec() -> Codec:
    """Build the zstd codec; imports ``zstandard`` now, so it runs on first use only.

    Raises:
        MissingExtra: ``zstandard`` is not installed.
    """
    try:
        import zstandard
    except ImportError:
        raise MissingExtra("zstd codec", "zstd", "zstandard") from None

    # ZstdCompressor/ZstdDecompressor objects hold a C context and must not be shared between
    # threads; one pair per thread keeps the context reuse (cheap calls) and thread safety.
    local = threading.local()
    level = LEVELS["zstd"]
    ZstdError = zstandard.ZstdError
    content_size = zstandard.frame_content_size

    def compress(data: bytes) -> bytes:
        try:
            return local.compress(data)
        except AttributeError:  # this thread's first call: make its compressor
            # The default writes the content size into the frame header (see decompress).
            local.compress = zstandard.ZstdCompressor(level=level).compress
            return local.compress(data)

    def decompress(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
        try:
            size = content_size(data)
            if 0 <= size <= max_size:
                # The declared size bounds the allocation, and libzstd refuses a frame that
                # produces more than it declared: a lying header is an error, not a bomb.
                return local.decompress(data)
        except ZstdError as exc:
            raise CodecError(f"zstd: corrupt or truncated input ({exc})") from None
        except AttributeError:  # this thread's first call: make its decompressor
            local.decompress = zstandard.ZstdDecompressor().decompress
            return decompress(data, max_size)
        if size > max_size:
            raise DecompressionBomb("zstd", max_size)
        return _zstd_undeclared(local.decompress, data, max_size, ZstdError)

    return Codec("zstd", compress, decompress)


def _zstd_undeclared(decompress: Any, data: bytes, max_size: int, error: type[BaseException]) -> bytes:
    """Decompress a frame whose header declares no size (a streamed frame) within max_size."""
    try:
        out = decompress(data, max_output_size=max_size + 1)
    except error as exc:
        # The same message means "output would not fit" and "input ended early": tell them
        # apart with a bounded streaming read, which never holds more than max_size + 1 bytes.
        try:
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(data)
            too_big = len(reader.read(max_size + 1)) > max_size
        except Exception:
            too_big = False
        if too_big:
            raise DecompressionBomb("zstd", max_size) from None
        raise CodecError(f"zstd: corrupt or truncated input ({exc})") from None
    if len(out) > max_size:
        raise DecompressionBomb("zstd", max_size)
    return out


# --- the registry --------------------------------------------------------------------------


def _adopt_entry_point(codecs: Plugins[Codec], ep: Any) -> None:
    """Register the codec of one ``minipool.codecs`` entry point, loaded now.

    Its value is a :class:`Codec` or a callable returning one. Built-in and explicitly
    registered codecs win over a plug-in of the same name; a plug-in that fails to load is
    logged and skipped, so one broken package does not break every codec.
    """
    try:
        obj = ep.load()
        codec = obj if isinstance(obj, Codec) else obj()
        if not isinstance(codec, Codec):
            raise TypeError(f"{ep.value} gave {type(codec).__name__}, not a Codec")
    except Exception as exc:
        log.warning("skipping codec entry point %r: %s", ep.name, exc)
        return
    if codec.name not in codecs:
        codecs.add(codec.name, codec)


#: Every codec by name. zstd is built on first use, because building it imports an optional
#: package.
CODECS: Plugins[Codec] = Plugins(
    "codec",
    ENTRY_POINT_GROUP,
    lambda name, known: CodecError(f"unknown codec {name!r} (known: {known})"),
    _adopt_entry_point,
)
for _codec in (
    Codec("none", _none_compress, _none_decompress),
    _zlib_codec("gzip", 31),
    _zlib_codec("deflate", 15),
    _lzma_codec(),
    _bz2_codec(),
):
    CODECS.add(_codec.name, _codec)
del _codec
CODECS.add_lazy("zstd", _zstd_codec)


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Make ``codec`` available under ``codec.name``.

    Args:
        codec: the codec to add.
        replace: allow replacing a codec of the same name (including a built-in one).

    Raises:
        ValueError: a codec of that name exists and ``replace`` is false, or the name is empty.
        TypeError: ``codec`` is not a :class:`Codec`.
    """
    if not isinstance(codec, Codec):
        raise TypeError(f"expected a Codec, got {type(codec).__name__}")
    if not codec.name:
        raise ValueError("a codec needs a non-empty name")
    CODECS.add(codec.name, codec, replace=replace)


def get_codec(name: str) -> Codec:
    """The codec called ``name``.

    Raises:
        CodecError: no codec has that name (the message lists the known ones).
        MissingExtra: the codec needs an optional package that is not installed (zstd).
    """
    try:
        return CODECS.ready[name]  # the hot path: one dict lookup, not even a method call
    except KeyError:
        return CODECS.get(name)


def available_codecs() -> list[str]:
    """Names of the codecs that work here: built-ins whose package is installed, codecs
    registered with :func:`register_codec`, and those of the ``minipool.codecs`` entry points."""
    return CODECS.usable()
