"""The Twisted client (zbifrost.client.twisted) against a real zbifrost in the same reactor: what is
its own (Deferreds from callbacks, `sub.next()`) and join/leave; the cases it shares with the asyncio
client are in test_client_flavours.py."""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.helpers import CuttableProxy, start_engine
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
