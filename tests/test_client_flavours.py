"""The cases both clients share, run once per flavour: the asyncio client (zbifrost.client) in an event
loop of its own thread, and the Twisted client (zbifrost.client.twisted) in the server's reactor. Each
scenario is a coroutine taking a `Flavour`, whose `connect` is an async context manager and whose
`gather` waits for several requests, so one test body serves both."""

import asyncio
import contextlib

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.helpers import in_thread, start_engine, write_tokens
from tests.test_channel_presence import RULES
from tests.test_channel_rules import _start
from zbifrost.client import BifrostError
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
