"""Shared fixtures: a real zbifrost on a loopback port, started and stopped in the reactor."""

import os

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from zbifrost import testing

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEMO_WORKSPACE = os.path.join(REPO, "zui")

# trial's TestCase spins the reactor itself, which clashes with pytest-twisted's reactor
# greenlet in the same process; test_core_twistd.py runs that module under `trial` and under
# `pytest -p no:twisted`, each in a process of its own.
collect_ignore = ["test_testing_helpers_trial.py"]


@pytest.fixture
def make_server():
    """Start servers with custom settings (default: the bundled demo workspace): returns a
    Deferred firing with a RunningServer. Every server is stopped after the test."""
    servers = []

    def start(**settings):
        settings.setdefault("workspace", DEMO_WORKSPACE)
        started = testing.start_server(**settings)
        started.addCallback(lambda server: servers.append(server) or server)
        return started

    yield start
    for server in servers:
        pytest_twisted.blockon(server.stop())


@pytest.fixture
def server(make_server):
    """A running server for the bundled demo workspace with default settings."""
    return pytest_twisted.blockon(make_server())


@pytest.fixture
def log_events():
    """Every log event emitted during the test."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
