"""Shared fixtures: a real zbifrost on a loopback port, started and stopped in the reactor."""

import os

import pytest
import pytest_twisted

from zbifrost import testing

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEMO_WORKSPACE = os.path.join(REPO, "zui")


def start(**settings):
    """Start a server (blocking the test greenlet until it listens); returns RunningServer."""
    settings.setdefault("workspace", DEMO_WORKSPACE)
    return pytest_twisted.blockon(testing.start_server(**settings))


@pytest.fixture
def make_server():
    """Start servers with custom settings; all are stopped after the test."""
    servers = []

    def factory(**settings):
        server = start(**settings)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        pytest_twisted.blockon(server.stop())


@pytest.fixture
def server(make_server):
    """The bundled demo workspace with default settings."""
    return make_server()
