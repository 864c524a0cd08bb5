"""Test helpers for transports: throwaway TLS certificates and an echo server.

Certificates are made at test time with the ``openssl`` command-line tool (a CA, and a server
certificate for ``localhost`` / ``127.0.0.1`` signed by it), so no key material lives in the
repository. Tests that need TLS skip, saying why, when ``openssl`` is missing.
"""

from __future__ import annotations

import dataclasses
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from minipool.errors import ConnectionClosed
from minipool.transports import Connection, listen


@dataclasses.dataclass
class TlsPair:
    """Server and client contexts sharing one throwaway CA."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    ca_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN=minipool test {name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        "subjectKeyIdentifier=hash",
        cwd=directory,
    )


def make_tls(directory: Path) -> TlsPair:
    """Create a CA and a server certificate for localhost/127.0.0.1 under ``directory``."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory.mkdir(parents=True, exist_ok=True)
    _make_ca(directory, "ca")
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        cwd=directory,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "server.pem", directory / "server.key")
    client = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    return TlsPair(server, client, directory / "ca.pem")


def other_ca_client(directory: Path) -> ssl.SSLContext:
    """A client context that trusts only a different, unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    _make_ca(directory, "other")
    return ssl.create_default_context(cafile=str(directory / "other.pem"))


class EchoServer:
    """Serve ``url`` in background threads, echoing every message; record what each connection
    ended with in ``errors``. ``close()`` stops and joins everything."""

    def __init__(self, url: str, **options: object) -> None:
        self.listener = listen(url, **options)
        self.url = self.listener.url
        self.errors: list[BaseException] = []
        self._conns: list[Connection] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except ConnectionClosed:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._conns.append(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: Connection) -> None:
        try:
            conn.handshake(5)
            while True:
                conn.send(conn.recv())
        except Exception as exc:  # noqa: BLE001 -- recorded for the test to inspect
            with self._done:
                self.errors.append(exc)
                self._done.notify_all()
        finally:
            conn.close()

    def wait_errors(self, count: int, timeout: float = 10) -> list[BaseException]:
        """Wait until ``count`` connections have ended; return how they ended."""
        with self._done:
            self._done.wait_for(lambda: len(self.errors) >= count, timeout)
            return list(self.errors)

    def close(self) -> None:
        self.listener.close()
        self._accepter.join(10)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            conn.close()
        for thread in threads:
            thread.join(10)
        assert not self._accepter.is_alive() and not any(t.is_alive() for t in threads)

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
