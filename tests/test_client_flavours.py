"""The cases both clients share, run once per flavour: the asyncio client (zbifrost.client) in an event
loop of its own thread, and the Twisted client (zbifrost.client.twisted) in the server's reactor. Each
scenario is a coroutine taking a `Flavour`, whose `connect` is an async context manager and whose
`gather`, `next_of`, `sleep` and `in_reactor` wait in that flavour's way, so one test body serves both."""

import asyncio
import contextlib
import json
import time

import jwt
import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.threads import blockingCallFromThread

from tests.helpers import CuttableProxy, in_thread, start_engine, write_tokens
from tests.test_channel_presence import RULES
from tests.test_channel_rules import _start
from zbifrost.client import BifrostError, Position, RecoveryLost
from zbifrost.client import connect as aio_connect
from zbifrost.client.twisted import connect as twisted_connect


class DeferredFlag:
    """asyncio.Event's `set` and `wait` over a Deferred."""

    def __init__(self):
        self._set = defer.Deferred()

    def set(self):
        if not self._set.called:
            self._set.callback(None)

    def wait(self):
        return self._set


class Asyncio:
    @staticmethod
    def connect(url, **options):
        return aio_connect(url, **options)

    @staticmethod
    async def gather(*awaitables):
        return await asyncio.gather(*awaitables)

    @staticmethod
    def flag():
        return asyncio.Event()

    @staticmethod
    def wait(flag):
        """Until `flag.set()`, for at most 10 s."""
        return asyncio.wait_for(flag.wait(), 10)

    @staticmethod
    def next_of(subscription, timeout=10):
        """The subscription's next publication (or what its loop raises), for at most `timeout` s."""
        return asyncio.wait_for(anext(subscription), timeout)

    @staticmethod
    def sleep(seconds):
        return asyncio.sleep(seconds)

    @staticmethod
    def in_reactor(function, *args, **kwargs):
        """Call `function` in the reactor (the server's thread); its result, a Deferred's once fired."""
        from twisted.internet import reactor

        return asyncio.to_thread(blockingCallFromThread, reactor, function, *args, **kwargs)

    @staticmethod
    def run(scenario):
        return in_thread(asyncio.run, asyncio.wait_for(scenario(Asyncio), 60))


class Twisted:
    @staticmethod
    @contextlib.asynccontextmanager
    async def connect(url, **options):
        client = await twisted_connect(url, **options)
        try:
            yield client
        finally:
            await client.close()

    @staticmethod
    async def gather(*deferreds):
        return await defer.gatherResults(list(deferreds))

    @staticmethod
    def flag():
        return DeferredFlag()

    @staticmethod
    def wait(flag):
        from twisted.internet import reactor

        return flag.wait().addTimeout(10, reactor)

    @staticmethod
    def next_of(subscription, timeout=10):
        from twisted.internet import reactor

        return defer.ensureDeferred(anext(subscription)).addTimeout(timeout, reactor)

    @staticmethod
    def sleep(seconds):
        from twisted.internet import reactor

        return task.deferLater(reactor, seconds)

    @staticmethod
    def in_reactor(function, *args, **kwargs):
        return defer.maybeDeferred(function, *args, **kwargs)

    @staticmethod
    def run(scenario):
        from twisted.internet import reactor

        return defer.ensureDeferred(scenario(Twisted)).addTimeout(60, reactor)


flavours = pytest.mark.parametrize("flavour", [Asyncio, Twisted], ids=["asyncio", "twisted"])


@flavours
@pytest_twisted.inlineCallbacks
def test_a_hundred_concurrent_dispatches_each_get_their_own_reply(make_server, flavour):
    server = yield start_engine(make_server, rate=0, max_in_flight=200)

    async def scenario(flavour):
        async with flavour.connect(server.url) as client:
            return await flavour.gather(*(client.dispatch("Cached Echo", args=[n]) for n in range(100)))

    results = yield flavour.run(scenario)
    assert [result["args"] for result in results] == [[n] for n in range(100)]


@flavours
@pytest_twisted.inlineCallbacks
def test_an_input_request_is_answered_by_the_callback_and_without_one_the_dispatch_fails_clearly(
        make_server, flavour):
    server = yield start_engine(make_server)

    def answer(request):
        return {"name": "Al", "age": 30}

    async def scenario(flavour):
        async with flavour.connect(server.url, on_input=answer) as client:
            answered = await client.dispatch("Profile")
        async with flavour.connect(server.url) as client:
            with pytest.raises(BifrostError) as caught:
                await client.dispatch("Profile")
            still_usable = await client.dispatch("^Ping")
        return answered, caught.value, still_usable

    answered, error, still_usable = yield flavour.run(scenario)
    assert answered[:2] == ["Al", 30]
    assert error.code == "input_required" and "name, age" in error.message
    assert still_usable == {"message": "Pong!"}


async def _refused_connect(flavour, url, **options):
    """The BifrostError a refused connection ends with, and the states it went through."""
    states = []
    with pytest.raises(BifrostError) as caught:
        async with flavour.connect(url, on_state=states.append, **options):
            pass
    return caught.value, [str(state) for state in states]


@flavours
@pytest_twisted.inlineCallbacks
def test_an_invalid_token_closes_for_good_without_a_reconnection(make_server, tmp_path, flavour):
    tokens = write_tokens(tmp_path / "tokens.yaml", ("good-token", "ann", "user"))
    server = yield make_server(require_auth=True, tokens_file=tokens)

    error, states = yield flavour.run(lambda flavour: _refused_connect(flavour, server.url, token="wrong-token"))
    assert (error.code, error.close_code, error.reason) == ("disconnected", 1008, "Invalid token")
    assert states == ["connecting", "closed (1008 Invalid token)"]


@flavours
@pytest_twisted.inlineCallbacks
def test_an_origin_refused_at_the_upgrade_closes_for_good_with_its_status(make_server, flavour):
    server = yield make_server()

    error, states = yield flavour.run(lambda flavour: _refused_connect(flavour, server.url,
                                                                       origin="http://evil.example"))
    assert (error.code, error.status) == ("disconnected", 403)
    assert states == ["connecting", "closed (HTTP 403)"]


@flavours
@pytest_twisted.inlineCallbacks
def test_join_and_leave_of_other_subscribers_reach_the_subscription_callbacks(make_server, tmp_path, flavour):
    server = yield _start(make_server, tmp_path, RULES)

    async def scenario(flavour):
        events, left = [], flavour.flag()

        def on_leave(info):
            events.append(("leave", info["user"]))
            left.set()

        async with flavour.connect(server.url, token="t-alice") as alice:
            await alice.subscribe("room.1", on_join=lambda info: events.append(("join", info["user"])),
                                  on_leave=on_leave)
            async with flavour.connect(server.url, token="t-root") as bob:
                await bob.subscribe("room.1")
            await flavour.wait(left)  # without join/leave reaching the callbacks: a timeout
        return events

    assert (yield flavour.run(scenario)) == [("join", "root"), ("leave", "root")]


async def _following(flavour, subscription, count):
    return [await flavour.next_of(subscription) for _ in range(count)]


@pytest.mark.slow  # a reconnection: about a second
@flavours
@pytest_twisted.inlineCallbacks
def test_publications_made_while_the_connection_is_cut_arrive_once_in_order_after_the_reconnection(
        make_server, flavour):
    server = yield make_server(rate=0)
    proxy = CuttableProxy(server.port)

    async def scenario(flavour):
        states = []
        async with flavour.connect(server.url) as publisher, \
                flavour.connect(proxy.url, on_state=states.append) as follower:
            subscription = await follower.subscribe("chat")
            await publisher.publish("chat", 0)
            before = await _following(flavour, subscription, 1)
            await flavour.in_reactor(proxy.cut)
            for n in range(1, 6):
                await publisher.publish("chat", n)
            await flavour.in_reactor(proxy.restore)
            during = await _following(flavour, subscription, 5)
            await publisher.publish("chat", 6)
            after = await _following(flavour, subscription, 1)
        return before + during + after, [state.name for state in states]

    try:
        publications, states = yield flavour.run(scenario)
    finally:
        yield proxy.stop()
    assert [(pub.data, pub.offset) for pub in publications] == [(n, n + 1) for n in range(7)]
    assert len({pub.epoch for pub in publications}) == 1 and all(pub.sender.startswith("c") for pub in publications)
    assert states[:2] == ["connecting", "connected"] and "reconnecting" in states and states[-2] == "connected"


@pytest.mark.slow  # restarts the server
@flavours
@pytest_twisted.inlineCallbacks
def test_a_memory_server_restart_raises_recovery_lost_in_the_loop_which_goes_on(make_server, flavour):
    first = yield make_server(rate=0)

    async def scenario(flavour):
        async with flavour.connect(first.url) as follower:
            subscription = await follower.subscribe("chat")
            async with flavour.connect(first.url) as publisher:
                await publisher.publish("chat", "before")
                before = await _following(flavour, subscription, 1)
            await flavour.in_reactor(first.stop)
            await flavour.in_reactor(make_server, port=first.port, rate=0)
            with pytest.raises(RecoveryLost) as lost:
                await flavour.next_of(subscription)
            async with flavour.connect(first.url) as publisher:
                await publisher.publish("chat", "after")
            after = await _following(flavour, subscription, 1)
        with pytest.raises(StopAsyncIteration):  # closed by the client: the loop ends
            await flavour.next_of(subscription)
        return before[0], lost.value, after[0]

    before, lost, after = yield flavour.run(scenario)
    assert lost.channel == "chat" and lost.position.epoch != before.epoch and lost.position.offset == 0
    assert (after.data, after.offset, after.epoch) == ("after", 1, lost.position.epoch)


@pytest.mark.slow  # waits for a token to expire: about 2 s
@flavours
@pytest_twisted.inlineCallbacks
def test_an_expired_static_token_ends_the_subscription_loop_without_a_reconnection(make_server, tmp_path, flavour):
    tokens = write_tokens(tmp_path / "tokens.yaml", ("soon-token", "sam", "user", {"expires": int(time.time()) + 2}))
    server = yield make_server(require_auth=True, tokens_file=tokens)

    async def scenario(flavour):
        states = []
        async with flavour.connect(server.url, token="soon-token", on_state=states.append) as client:
            subscription = await client.subscribe("chat")
            with pytest.raises(BifrostError) as caught:
                await flavour.next_of(subscription)
        return caught.value, [state.name for state in states]

    error, states = yield flavour.run(scenario)
    assert (error.close_code, error.reason) == (1008, "Token expired")
    assert states == ["connecting", "connected", "closed"]


@pytest.mark.slow  # outlives a token of 3 s
@flavours
@pytest_twisted.inlineCallbacks
def test_a_token_from_get_token_is_refreshed_before_it_expires_without_a_reconnection(make_server, tmp_path, flavour):
    secret = "a shared secret of sixty-four bytes or more, as RFC 7518 asks for HS512"
    config = tmp_path / "zbifrost.yaml"
    config.write_text(f"websocket:\n  require_auth: true\n  jwt:\n    secret: {json.dumps(secret)}\n    leeway: 0\n")
    server = yield make_server(config_file=str(config))
    issued = []

    async def get_token():
        issued.append(int(time.time()) + 3)
        return jwt.encode({"sub": "alice", "exp": issued[-1]}, secret, algorithm="HS256")

    async def scenario(flavour):
        states = []
        async with flavour.connect(server.url, get_token=get_token, on_state=states.append) as client:
            client_id = client.info["client_id"]
            await flavour.sleep(issued[0] + 1.5 - time.time())  # past the first token's expiry
            result = await client.dispatch("^Ping")
            return result, client_id, client.info["client_id"], [state.name for state in states]

    result, first_id, last_id, states = yield flavour.run(scenario)
    assert result == {"message": "Pong!"} and first_id == last_id
    assert states == ["connecting", "connected"] and len(issued) >= 2


@flavours
@pytest_twisted.inlineCallbacks
def test_subscribe_since_a_saved_position_replays_what_followed_it(make_server, flavour):
    server = yield make_server()

    async def scenario(flavour):
        async with flavour.connect(server.url) as client:
            subscription = await client.subscribe("news")
            for n in range(3):
                await client.publish("news", n, idempotency_key=f"k-{n}")
            saved = subscription.position
        async with flavour.connect(server.url) as client:
            await client.publish("news", 3)
            replayed = await client.subscribe("news", since=Position(saved.epoch, 1))
            return saved, await _following(flavour, replayed, 2)

    saved, replayed = yield flavour.run(scenario)
    assert saved.offset == 3  # its own publications moved the position on
    assert [(pub.data, pub.offset) for pub in replayed] == [(1, 2), (2, 3)]


@flavours
@pytest_twisted.inlineCallbacks
def test_a_wait_for_the_next_publication_given_up_on_loses_no_publication(make_server, flavour):
    server = yield make_server()

    async def scenario(flavour):
        async with flavour.connect(server.url) as follower, flavour.connect(server.url) as publisher:
            subscription = await follower.subscribe("chat")
            with pytest.raises((TimeoutError, defer.TimeoutError)):
                await flavour.next_of(subscription, timeout=0.1)  # nothing published yet: it times out
            for n in range(2):
                await publisher.publish("chat", n)
            return await _following(flavour, subscription, 2)

    assert [pub.data for pub in (yield flavour.run(scenario))] == [0, 1]
