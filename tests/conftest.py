import importlib.util
import logging

import pytest

#: Every transport the pool's end-to-end tests run over. zmq+tcp needs the `zmq` extra.
TRANSPORTS = ["tcp", "ws", "http"] + (["zmq+tcp"] if importlib.util.find_spec("zmq") else [])


@pytest.fixture(scope="session", params=TRANSPORTS)
def pool(request):
    """An embedded pool of two worker processes per transport, shared by the tests that do not
    break it: every test that takes this fixture runs once over each transport."""
    from minipool import Pool

    with Pool(2, transport=request.param) as p:
        p.wait_for_workers()
        yield p


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture(autouse=True)
def _quiet_expected_warnings(caplog):
    # Fault-injection tests make the coordinator log warnings on purpose.
    caplog.set_level(logging.ERROR, logger="minipool")
