"""WebSocket masking (RFC 6455 §5.3): the XOR of a payload with its frame's key.

Technique: *pure computation kept out of the interpreter loop*. A client masks every byte it
sends with a fresh 4-byte key and the server unmasks every byte it receives, so masking is on
the path of every message. A per-byte Python loop does it at tens of MB/s; :func:`apply_mask`
lets C do it instead. A short payload becomes one integer, XORed with the key repeated (made by
one small multiplication). A longer one is cut into four strided slices -- bytes 0, 4, 8, ...;
1, 5, 9, ... -- each XORed with one key byte by ``bytes.translate`` through a 256-byte table:
no integer conversions, and about a third less time from half a kilobyte up.
docs/websocket.md has the measurements behind each choice.
"""

from __future__ import annotations

import collections
import functools
import os

__all__ = ["MaskKeys", "apply_mask", "masked_copy"]

_TRANSLATE_FROM = 512  # from here on, byte tables beat big-integer XOR (docs/websocket.md)


@functools.lru_cache(maxsize=512)
def _ones(n4: int) -> int:
    """The integer whose little-endian bytes are 01 00 00 00 repeated over ``n4`` bytes."""
    return int.from_bytes(b"\x01\x00\x00\x00" * (n4 >> 2), "little")


class MaskKeys:
    """Fresh masking keys for one client connection, from the operating system's CSPRNG.

    §5.3 asks for a key from a strong source of entropy that a server or proxy cannot predict.
    ``os.urandom(4)`` per frame is one system call per message; this draws 1,024 keys in one call
    and hands them out in turn. A deque's ``popleft`` is atomic, so threads sharing a connection
    never get the same key, and each connection has its own keys, so processes forked from one
    parent never share a sequence.
    """

    __slots__ = ("_keys",)

    _BATCH = 1024

    def __init__(self) -> None:
        self._keys: collections.deque[bytes] = collections.deque()

    def __call__(self) -> bytes:
        """The next key: 4 unpredictable bytes."""
        try:
            return self._keys.popleft()
        except IndexError:
            block = os.urandom(4 * self._BATCH)
            self._keys.extend(block[i : i + 4] for i in range(0, len(block), 4))
            return self._keys.popleft()


def _xor_table(k: int) -> bytes:
    """The ``bytes.translate`` table that XORs every byte with ``k`` (made once, on first use)."""
    table = _XOR_TABLES[k]
    if not table:
        table = _XOR_TABLES[k] = bytes(i ^ k for i in range(256))
    return table


_XOR_TABLES = [b""] * 256


def apply_mask(data: bytes | bytearray | memoryview, key: bytes | bytearray | memoryview) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (§5.3); masking and unmasking are the same.

    Args:
        data: the payload.
        key: 4 bytes.
    """
    n = len(data)
    if n < _TRANSLATE_FROM:
        if not n:
            return b""
        # key * 0x...00000001_00000001 repeats the key across n4 bytes in one small multiply.
        n4 = (n + 3) & ~3
        masked = int.from_bytes(data, "little") ^ int.from_bytes(key, "little") * _ones(n4)
        return masked.to_bytes(n4, "little")[:n] if n != n4 else masked.to_bytes(n, "little")
    return bytes(masked_copy(data, key))


def masked_copy(
    data: bytes | bytearray | memoryview, key: bytes | bytearray | memoryview
) -> bytes | bytearray:
    """:func:`apply_mask`, as a ``bytearray`` when that saves a copy (a sender that joins the
    result behind a frame header copies it once more anyway)."""
    if len(data) < _TRANSLATE_FROM:
        return apply_mask(data, key)
    # Every 4th byte is XORed with the same key byte: four strided slices, each translated
    # through its key byte's table, all in C.
    out = bytearray(data)
    k0, k1, k2, k3 = key
    out[0::4] = out[0::4].translate(_XOR_TABLES[k0] or _xor_table(k0))
    out[1::4] = out[1::4].translate(_XOR_TABLES[k1] or _xor_table(k1))
    out[2::4] = out[2::4].translate(_XOR_TABLES[k2] or _xor_table(k2))
    out[3::4] = out[3::4].translate(_XOR_TABLES[k3] or _xor_table(k3))
    return out
