"""The stack profile the integration tests run against: ``--profile local|scale``.

``make test`` runs the whole suite on ``local``, then tests/integration on ``scale``.
A test that checks one profile's components only is marked
``@pytest.mark.profile("local")`` (or "scale"); on the other profile it is deselected,
not skipped: it does not apply there. A fault run only by ``make chaos`` (``--chaos``)
is marked ``@pytest.mark.chaos``: ``make test`` deselects it the same way.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--profile",
        default=os.environ.get("STATESTORE_TEST_PROFILE", "local"),
        choices=["local", "scale"],
        help="stack profile for the integration tests (default: local; $STATESTORE_TEST_PROFILE)",
    )
    parser.addoption(
        "--chaos",
        action="store_true",
        default=os.environ.get("STATESTORE_CHAOS") == "1",
        help="also run the faults marked chaos (make chaos; $STATESTORE_CHAOS=1)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "profile(name): the test applies to that stack profile only")
    config.addinivalue_line("markers", "chaos: a long fault that `make chaos` runs (--chaos), not `make test`")


def pytest_collection_modifyitems(config, items):
    profile = config.getoption("--profile")
    chaos = config.getoption("--chaos")
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("profile")
        elsewhere = marker and profile not in marker.args
        (drop if elsewhere or (item.get_closest_marker("chaos") and not chaos) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def profile(request) -> str:
    return request.config.getoption("--profile")
