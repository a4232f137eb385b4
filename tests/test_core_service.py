"""The service tree: construction binds nothing, starting binds every --listen endpoint."""

import socket

import pytest
import pytest_twisted

from zbifrost import testing
from zbifrost.config import ConfigError, load_config
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


@pytest_twisted.inlineCallbacks
def test_start_server_serves_the_only_zui_file_of_a_workspace_and_names_the_real_path_when_missing(tmp_path):
    (tmp_path / "zUI.main.yaml").write_text("Menu:\n  Ping: Pong\n")
    server = yield testing.start_server(str(tmp_path))
    try:
        client = yield connect(server.url)
        assert (yield client.dispatch("Ping")) == {"message": "Pong"}
        yield client.close()
    finally:
        yield server.stop()
    with pytest.raises(ConfigError) as refused:
        yield testing.start_server(str(tmp_path), zvafile="@.zUI.level1")
    assert str(refused.value) == (f"zVaFile: zPath '@.zUI.level1': no zUI.level1.yaml (or .yml/.json) in "
                                  f"{tmp_path.resolve()}; zUI files there: zUI.main.yaml "
                                  f"(pick one with --zvafile or zVaFile)")
