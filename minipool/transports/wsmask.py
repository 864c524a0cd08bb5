"""WebSocket masking (RFC 6455 §5.3): the XOR of a payload with its frame's key.

Technique: *pure computation kept out of the interpreter loop*. A client masks every byte it
sends with a fresh 4-byte key and the server unmasks every byte it receives, so masking is on
the path of every message. A per-byte Python loop does it at tens of MB/s; :func:`apply_mask`
lets C do it instead: the payload becomes one integer, XORed with the key repeated (made by one
small multiplication), in 8 KiB blocks for long payloads so the conversions stay in cache.
docs/websocket.md has the measurements behind each choice.
"""

from __future__ import annotations

import collections
import functools
import os

__all__ = ["MaskKeys", "apply_mask"]

_BLOCK = 8192  # masking block; 8 KiB keeps the int <-> bytes conversions in cache


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


def apply_mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (§5.3); masking and unmasking are the same.

    Args:
        data: the payload.
        key: 4 bytes.
    """
    n = len(data)
    if n <= _BLOCK:
        if not n:
            return b""
        # key * 0x...00000001_00000001 repeats the key across n4 bytes in one small multiply.
        n4 = (n + 3) & ~3
        masked = int.from_bytes(data, "little") ^ int.from_bytes(key, "little") * _ones(n4)
        return masked.to_bytes(n4, "little")[:n] if n != n4 else masked.to_bytes(n, "little")
    # Long payloads: block by block. _BLOCK is a multiple of 4, so every block starts on the
    # key's first byte and one integer mask serves them all.
    block_mask = int.from_bytes(key * (_BLOCK >> 2), "little")
    from_bytes = int.from_bytes
    view = memoryview(data).cast("B")
    out = bytearray(n)
    end = n - n % _BLOCK
    for i in range(0, end, _BLOCK):
        j = i + _BLOCK
        out[i:j] = (from_bytes(view[i:j], "little") ^ block_mask).to_bytes(_BLOCK, "little")
    if end < n:
        out[end:] = apply_mask(view[end:], key)
    return bytes(out)
