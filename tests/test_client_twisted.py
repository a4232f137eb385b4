"""The Twisted client (zbifrost.client.twisted) against a real zbifrost in the same reactor: what is
its own (Deferreds from callbacks, `sub.next()`) and join/leave; the cases it shares with the asyncio
client are in test_client_flavours.py."""

import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.helpers import CuttableProxy, start_engine, write_tokens
from zbifrost.client.core import BifrostError
from zbifrost.client.twisted import connect


@pytest_twisted.inlineCallbacks
def test_an_on_input_returning_a_deferred_is_answered_and_an_error_reply_fails_with_its_code(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url, on_input=lambda request: defer.succeed({"name": "Al", "age": 30}))
    answered = yield client.dispatch("Profile")
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("^Nope")
    yield client.close()
    assert answered[:2] == ["Al", 30] and caught.value.code == "unknown_command"


@pytest_twisted.inlineCallbacks
def test_cancelling_connect_closes_the_client_instead_of_reconnecting_for_ever(make_server):
    server = yield make_server()
    proxy = CuttableProxy(server.port)
    proxy.cut()  # every attempt is dropped: the client keeps reconnecting
    states = []
    try:
        connecting = connect(proxy.url, on_state=states.append)
        while [state.name for state in states].count("connecting") < 2:
            yield task.deferLater(reactor, 0.1)
        connecting.cancel()
        with pytest.raises(defer.CancelledError):
            yield connecting
    finally:
        yield proxy.stop()
    assert str(states[-1]) == "closed (1000 Client disconnect)"  # without it: "reconnecting in ..." for ever


@pytest_twisted.inlineCallbacks
def test_a_harness_passes_headers_and_protocols_sees_every_frame_and_closes_with_its_code(
        make_server, tmp_path, monkeypatch):
    tokens = write_tokens(tmp_path / "tokens.yaml", ("good-token", "ann", "user"))
    server = yield make_server(require_auth=True, tokens_file=tokens)
    heard = []  # the close codes the server receives
    server_on_close = server.factory.protocol.onClose
    monkeypatch.setattr(server.factory.protocol, "onClose", lambda protocol, clean, code, reason: (
        heard.append(code), server_on_close(protocol, clean, code, reason)))
    frames, closes = [], []
    client = yield connect(server.url, headers={"Authorization": "Bearer good-token"}, protocols=["zbifrost.v1"],
                           reconnect=False, on_frame=lambda payload, binary: frames.append(json.loads(payload)),
                           on_close=lambda code, reason: closes.append(code))
    assert client.info["auth"]["user"] == "ann"
    assert client.protocol.websocket_protocol_in_use == "zbifrost.v1"
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close(4000)
    assert [frame.get("event") for frame in frames] == ["connection_info", None]
    assert frames[1]["result"] == {"message": "Pong!"}
    assert (heard, closes, client.protocol) == ([4000], [1000], None)  # the server answers 4000 with 1000
