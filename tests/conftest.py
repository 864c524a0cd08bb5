import importlib.util
import logging

import pytest

#: Every transport the pool's end-to-end tests run over. zmq+tcp needs the `zmq` extra.
TRANSPORTS = ["tcp", "ws", "http"] + (["zmq+tcp"] if importlib.util.find_spec("zmq") else [])
#: The same over TLS (certificates made at test time by tests/tlsutil.py).
TLS_TRANSPORTS = ["tls", "https", "wss"]


@pytest.fixture(scope="session", params=TRANSPORTS + TLS_TRANSPORTS)
def pool(request, tmp_path_factory):
    """An embedded pool of two worker processes per transport, shared by the tests that do not
    break it: every test that takes this fixture runs once over each transport."""
    from minipool import Pool

    options = {}
    if request.param in TLS_TRANSPORTS:
        from tlsutil import make_tls

        tls = make_tls(tmp_path_factory.mktemp("tls"))
        directory = tls.ca_file.parent
        options = {
            "certfile": str(directory / "server.pem"),
            "keyfile": str(directory / "server.key"),
            "cafile": str(tls.ca_file),
        }
    with Pool(2, transport=request.param, **options) as p:
        p.wait_for_workers()
        yield p


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture(autouse=True)
def _quiet_expected_warnings(caplog):
    # Fault-injection tests make the coordinator log warnings on purpose.
    caplog.set_level(logging.ERROR, logger="minipool")
