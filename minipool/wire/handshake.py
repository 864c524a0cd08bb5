"""The handshake: a mutual challenge-response on a shared key, as two small state machines.

Technique: *mutual authentication without sending the key*. As ``multiprocessing.connection``
does, but in both directions: each side proves it holds the key by returning the HMAC-SHA256 of
a fresh random nonce chosen by the other, so a recorded exchange cannot be replayed and a fake
coordinator cannot harvest tasks. Sans-I/O: :class:`ServerAuth` and :class:`ClientAuth` take
and return message bytes, and the caller moves them.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from ..errors import AuthenticationError, ProtocolError
from .envelope import Kind, Message, decode, encode

__all__ = ["ClientAuth", "NONCE_SIZE", "ServerAuth", "refusal"]


def refusal(reason: str, *, authentication: bool = False) -> bytes:
    """The ERROR a server sends before it closes a connection. ``authentication`` says the
    peer's key was wrong, which will not get better: a client gives up (AuthenticationError).
    Any other refusal -- a damaged, late or malformed message -- may not happen again, so a
    client that reconnects on failure tries again."""
    headers: dict[str, Any] = {"reason": reason}
    if authentication:
        headers["auth"] = True
    return encode(Message(Kind.ERROR, headers=headers))


NONCE_SIZE = 32
_MAC_SIZE = 32  # SHA-256


def _mac(key: bytes, role: bytes, nonce: bytes) -> bytes:
    # The role is mixed in so that a proof made by a client can never be reflected back as
    # a server's proof (a reflection attack on a symmetric challenge-response).
    return hmac.new(key, role + nonce, "sha256").digest()


class ServerAuth:
    """The coordinator's side of the handshake, as a two-step state machine.

    Usage: send ``challenge()``; pass the reply to ``verify(reply)``, which returns the WELCOME
    message to send back. Until ``verify`` returns, the peer is a stranger.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._nonce = os.urandom(NONCE_SIZE)
        self.authenticated = False

    def challenge(self) -> bytes:
        return encode(Message(Kind.CHALLENGE, body=self._nonce))

    def verify(self, reply: bytes) -> bytes:
        """Check the client's PROOF; return the WELCOME that proves us in turn.

        Raises:
            AuthenticationError: the proof is wrong (the client holds a different key).
            ProtocolError: the reply is not a PROOF message.
        """
        message = decode(reply)
        if message.kind is not Kind.PROOF:
            raise ProtocolError(f"expected a PROOF message, got {message.kind.name}")
        if len(message.body) != _MAC_SIZE + NONCE_SIZE:
            raise ProtocolError(f"a PROOF of {len(message.body)} bytes, not {_MAC_SIZE + NONCE_SIZE}")
        proof, client_nonce = message.body[:_MAC_SIZE], message.body[_MAC_SIZE:]
        if not hmac.compare_digest(proof, _mac(self._key, b"client", self._nonce)):
            raise AuthenticationError("client failed authentication: wrong key")
        self.authenticated = True
        return encode(Message(Kind.WELCOME, body=_mac(self._key, b"server", client_nonce)))


class ClientAuth:
    """The client's (or worker's) side: answer the challenge, then check the server's proof."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._nonce = os.urandom(NONCE_SIZE)
        self.authenticated = False

    def answer(self, challenge: bytes) -> bytes:
        """Return the PROOF for the server's CHALLENGE.

        Raises:
            ProtocolError: the message is not a CHALLENGE (e.g. not a minipool server).
        """
        message = decode(challenge)
        if message.kind is not Kind.CHALLENGE:
            raise ProtocolError(f"expected a CHALLENGE message, got {message.kind.name}")
        if len(message.body) != NONCE_SIZE:
            raise ProtocolError(f"a CHALLENGE of {len(message.body)} bytes, not {NONCE_SIZE}")
        proof = _mac(self._key, b"client", message.body)
        return encode(Message(Kind.PROOF, body=proof + self._nonce))

    def check(self, welcome: bytes) -> None:
        """Verify the server's WELCOME.

        Raises:
            AuthenticationError: the server rejected us (ERROR) or proved a different key.
        """
        message = decode(welcome)
        if message.kind is Kind.ERROR:
            reason = message.headers.get("reason", "rejected by the server")
            if message.headers.get("auth"):
                raise AuthenticationError(reason)
            raise ProtocolError(f"refused by the server: {reason}")
        if message.kind is not Kind.WELCOME:
            raise ProtocolError(f"expected a WELCOME message, got {message.kind.name}")
        if not hmac.compare_digest(message.body, _mac(self._key, b"server", self._nonce)):
            raise AuthenticationError("server failed authentication: wrong key")
        self.authenticated = True
