"""The Twisted client (zbifrost.client.twisted) against a real zbifrost in the same reactor: the
asyncio client's cases, with Deferreds, and join/leave on a subscription."""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.helpers import start_engine, write_tokens
from tests.test_channel_presence import RULES
from tests.test_channel_rules import _start
from zbifrost.client.base import RecoveryLost
from zbifrost.client.core import BifrostError
from zbifrost.client.twisted import connect


@pytest_twisted.inlineCallbacks
def test_a_hundred_concurrent_dispatches_each_get_their_own_reply(make_server):
    server = yield start_engine(make_server, rate=0, max_in_flight=200)
    client = yield connect(server.url)
    results = yield defer.gatherResults([client.dispatch("Cached Echo", args=[n]) for n in range(100)])
    yield client.close()
    assert [result["args"] for result in results] == [[n] for n in range(100)]


@pytest_twisted.inlineCallbacks
def test_an_input_request_is_answered_by_the_callback_and_an_error_reply_fails_with_its_code(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url, on_input=lambda request: defer.succeed({"name": "Al", "age": 30}))
    answered = yield client.dispatch("Profile")
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("^Nope")
    yield client.close()
    assert answered[:2] == ["Al", 30] and caught.value.code == "unknown_command"


@pytest_twisted.inlineCallbacks
def test_an_invalid_token_closes_for_good_without_a_reconnection(make_server, tmp_path):
    tokens = write_tokens(tmp_path / "tokens.yaml", ("good-token", "ann", "user"))
    server = yield make_server(require_auth=True, tokens_file=tokens)
    states = []
    with pytest.raises(BifrostError) as caught:
        yield connect(server.url, token="wrong-token", on_state=states.append)
    assert (caught.value.code, caught.value.close_code, caught.value.reason) == ("disconnected", 1008, "Invalid token")
    assert [str(state) for state in states] == ["connecting", "closed (1008 Invalid token)"]


@pytest_twisted.inlineCallbacks
def test_an_origin_refused_at_the_upgrade_closes_for_good_with_its_status(make_server):
    server = yield make_server()
    states = []
    with pytest.raises(BifrostError) as caught:
        yield connect(server.url, origin="http://evil.example", on_state=states.append)
    assert (caught.value.code, caught.value.status) == ("disconnected", 403)
    assert [str(state) for state in states] == ["connecting", "closed (HTTP 403)"]


@pytest.mark.slow  # restarts the server
@pytest_twisted.inlineCallbacks
def test_publications_arrive_in_order_and_a_memory_server_restart_fails_next_with_recovery_lost(make_server):
    first = yield make_server(rate=0)
    follower = yield connect(first.url)
    subscription = yield follower.subscribe("chat")
    publisher = yield connect(first.url)
    for n in range(3):
        yield publisher.publish("chat", n)
    before = []
    for _ in range(3):
        before.append((yield subscription.next()))
    yield publisher.close()
    yield first.stop()
    yield make_server(port=first.port, rate=0)
    with pytest.raises(RecoveryLost) as lost:
        yield subscription.next()
    publisher = yield connect(first.url)
    yield publisher.publish("chat", "after")
    after = yield subscription.next()
    yield publisher.close()
    yield follower.close()
    assert [(pub.data, pub.offset) for pub in before] == [(0, 1), (1, 2), (2, 3)]
    assert lost.value.position.epoch != before[0].epoch and lost.value.position.offset == 0
    assert (after.data, after.offset) == ("after", 1)
    assert (yield subscription.next()) is None  # closed by the client: the loop ends


@pytest_twisted.inlineCallbacks
def test_join_and_leave_of_other_subscribers_reach_the_subscription_callbacks(make_server, tmp_path):
    server = yield _start(make_server, tmp_path, RULES)
    events, heard = [], defer.Deferred()

    def note(kind):
        def called(info):
            events.append((kind, info["user"]))
            if kind == "leave":
                heard.callback(None)
        return called

    alice = yield connect(server.url, token="t-alice")
    yield alice.subscribe("room.1", on_join=note("join"), on_leave=note("leave"))
    bob = yield connect(server.url, token="t-root")
    yield bob.subscribe("room.1")
    yield bob.close()
    yield heard.addTimeout(10, reactor)  # without join/leave reaching the callbacks: a TimeoutError
    yield alice.close()
    assert events == [("join", "root"), ("leave", "root")]
