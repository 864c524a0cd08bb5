"""TLS contexts for ``tls://``, ``https://`` and ``wss://``, from certificate files.

Technique: *transport security as an option, not a rewrite*. Every socket transport takes an
``ssl.SSLContext`` (``Options.ssl_context``) and wraps its sockets; these two helpers build the
contexts from the files a user has, for the CLI and for ``Pool`` alike. The HMAC handshake
still runs inside TLS: TLS hides and protects the bytes, the handshake proves the shared key.
"""

from __future__ import annotations

import os
import ssl

__all__ = ["server_context", "client_context"]

PathLike = str | os.PathLike[str]


def server_context(certfile: PathLike, keyfile: PathLike | None = None) -> ssl.SSLContext:
    """A server-side context presenting ``certfile`` (and its private key)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def client_context(cafile: PathLike | None = None, *, insecure: bool = False) -> ssl.SSLContext:
    """A client-side context that trusts ``cafile`` (default: the system's CAs).

    ``insecure=True`` skips verifying the server's certificate: encrypted, but open to anyone
    in the middle. Only for experiments.
    """
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
