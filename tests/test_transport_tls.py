"""TLS for every socket transport: tls://, https://, wss:// with a certificate made at test time."""

from __future__ import annotations

import importlib.util
import ssl

import pytest

from minipool.errors import ConnectionClosed, ProtocolError
from minipool.transports import connect
from tlsutil import EchoServer, make_tls, other_ca_client

PLAIN = {"tls": "tcp", "https": "http", "wss": "ws"}


def _needs(scheme: str) -> None:
    if scheme == "wss" and importlib.util.find_spec("minipool.transports.websocket") is None:
        pytest.skip("minipool.transports.websocket is not written yet")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["tls", "https", "wss"])
def scheme(request):
    _needs(request.param)
    return request.param


@pytest.fixture
def server(tls, scheme):
    with EchoServer(f"{scheme}://127.0.0.1:0", ssl_context=tls.server, handshake_timeout=1) as srv:
        assert srv.url.startswith(f"{scheme}://127.0.0.1:")
        yield srv


def _echo(url: str, context: ssl.SSLContext, payloads=(b"hello", b"", b"x" * 300_000)) -> None:
    with connect(url, ssl_context=context) as conn:
        for payload in payloads:
            conn.send(payload)
            assert conn.recv(10) == payload


def test_echo_over_tls(server, tls):
    _echo(server.url, tls.client)
    _echo(server.url.replace("127.0.0.1", "localhost"), tls.client, (b"by name",))


def test_plain_client_against_tls_server_fails_cleanly(server, tls, scheme):
    plain = server.url.replace(f"{scheme}://", f"{PLAIN[scheme]}://")
    try:
        with connect(plain, handshake_timeout=2) as conn:
            conn.send(b"not encrypted")
            conn.recv(2)
    except TimeoutError:
        pytest.fail("the server neither answered nor closed the connection")
    except (ConnectionClosed, ProtocolError, OSError):
        pass
    else:
        pytest.fail("a plain client was served by a TLS server")
    if scheme != "https":  # https:// refuses it while pairing, before any Connection exists
        errors = server.wait_errors(1)
        assert errors and isinstance(errors[0], (ProtocolError, ConnectionClosed, TimeoutError))
    _echo(server.url, tls.client, (b"still served",))


def test_client_trusting_another_ca_is_refused(server, tls, tmp_path):
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(server.url, ssl_context=other_ca_client(tmp_path))
    _echo(server.url, tls.client, (b"still served",))


def test_tls_server_needs_a_context(scheme):
    from minipool.errors import TransportError
    from minipool.transports import listen

    with pytest.raises(TransportError):
        listen(f"{scheme}://127.0.0.1:0")
