"""The service tree: construction binds nothing, starting binds every --listen endpoint."""

import socket

import pytest_twisted

from zbifrost.config import load_config
from zbifrost.service import BifrostService
from zbifrost.testing import connect

from .conftest import DEMO_WORKSPACE


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port):
    """Nothing listens there (SO_REUSEADDR, as Twisted uses: TIME_WAIT leftovers don't count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest_twisted.inlineCallbacks
def test_constructing_the_service_binds_nothing_and_starting_it_binds_every_listener():
    from twisted.internet import reactor

    ports = [free_port(), free_port()]
    config = load_config(environ={}, overrides={
        "workspace": DEMO_WORKSPACE, "listen": [f"tcp:{port}:interface=127.0.0.1" for port in ports]})
    service = BifrostService(config, reactor=reactor)
    assert all(port_is_free(port) for port in ports)
    service.startService()
    try:
        for port in ports:
            client = yield connect(f"ws://127.0.0.1:{port}/ws")
            assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
            yield client.close()
    finally:
        yield service.stopService()
    assert all(port_is_free(port) for port in ports)
