import logging

import pytest


@pytest.fixture(scope="session")
def pool():
    """One embedded pool of two worker processes, shared by the tests that do not break it."""
    from minipool import Pool

    with Pool(2) as p:
        p.wait_for_workers()
        yield p


@pytest.fixture(autouse=True)
def _quiet_expected_warnings(caplog):
    # Fault-injection tests make the coordinator log warnings on purpose.
    caplog.set_level(logging.ERROR, logger="minipool")
