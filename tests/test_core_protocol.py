"""The core protocol over a real socket: connection_info, Level-1 commands, errors, _requestId."""

import pytest
import pytest_twisted

from zbifrost import __version__
from zbifrost.testing import BifrostError, connect


@pytest_twisted.inlineCallbacks
def test_connection_info_is_the_first_frame_with_the_compatible_fields(server):
    client = yield connect(server.url)
    info = client.info
    assert client.frames[0]["event"] == "connection_info"
    assert info["server_version"] == __version__
    assert info["protocol"] == 1
    assert {"connection_info", "schema_cache"} <= set(info["features"])
    assert info["auth"] == {"authenticated": True, "user": "anonymous", "role": "guest"}
    assert info["session"] == {"workspace": "zui", "zVaFile": "@.zUI.level1", "zBlock": "Level1Menu",
                               "mode": "zBifrost"}
    assert info["limits"] == {"max_message_size": 65536, "rate": 50, "burst": 100, "max_in_flight": 16}
    assert info["client_id"].startswith("c-")
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_level1_commands_answer_in_sequence_on_one_socket(server):
    client = yield connect(server.url)
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    assert (yield client.dispatch("^Echo Test")) == {"message": "Echo: Hello from zBifrost"}
    assert (yield client.dispatch("^Status")) == {"message": "Server is running"}
    assert (yield client.dispatch("Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_unknown_command_is_an_error_and_the_connection_stays_usable(server):
    client = yield connect(server.url)
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("^Nope")
    assert caught.value.code == "unknown_command"
    assert caught.value.message == "Unknown command: ^Nope"
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()
