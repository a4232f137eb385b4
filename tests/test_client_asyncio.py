"""The asyncio client (zbifrost.client) against a real zbifrost: the server runs in the reactor, and each
test's client runs in an asyncio event loop of its own thread (as an application would run it)."""

import asyncio
import json
import subprocess
import sys
import time

import jwt
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from tests.helpers import in_thread, start_engine, write_tokens
from zbifrost import testing
from zbifrost.client import BifrostError, Position, RecoveryLost, connect


def run(scenario, *args):
    """Run `scenario(*args)` (a coroutine function) in an event loop of its own thread, for at most
    a minute; a Deferred."""
    return in_thread(asyncio.run, asyncio.wait_for(scenario(*args), 60))


def in_reactor(function, *args, **kwargs):
    """From the client's event loop: call `function` in the reactor and wait for its Deferred's result."""
    return asyncio.to_thread(blockingCallFromThread, reactor, function, *args, **kwargs)


async def next_of(subscription):
    """The next publication (or what the loop raises), failing the test rather than hanging."""
    return await asyncio.wait_for(anext(subscription), 10)


async def following(subscription, count):
    return [await next_of(subscription) for _ in range(count)]


class CuttableProxy:
    """A TCP relay on loopback to a server's port: `cut()` drops every relayed connection without a
    close frame (as a lost network does) and refuses new ones until `restore()`."""

    def __init__(self, port):
        self.port = port
        self.open = True
        self.writers = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ws"
        return self

    async def __aexit__(self, *exc_info):
        self.cut()
        self.server.close()

    async def _relay(self, reader, writer):
        if not self.open:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, upstream_writer]
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    @staticmethod
    async def _pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        writer.transport.abort()

    def cut(self):
        self.open = False
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    def restore(self):
        self.open = True


def test_importing_the_client_brings_neither_twisted_nor_autobahn():
    code = ("import sys, zbifrost.client, zbifrost.client.core; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'autobahn', 'txaio'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest_twisted.inlineCallbacks
def test_an_error_reply_raises_bifrost_error_with_its_code_and_progress_reaches_the_callback(make_server):
    server = yield start_engine(make_server)

    async def scenario():
        frames = []
        async with connect(server.url) as client:
            with pytest.raises(BifrostError) as caught:
                await client.dispatch("^Nope")
            result = await client.dispatch("Progress", on_event=frames.append)
            return caught.value.code, result, [frame["event"] for frame in frames]

    code, result, events = yield run(scenario)
    assert code == "unknown_command"
    assert result is not None and "progress" in events


@pytest.mark.slow  # a reconnection: about a second
@pytest_twisted.inlineCallbacks
def test_publications_made_while_the_connection_is_cut_arrive_once_in_order_after_the_reconnection(make_server):
    server = yield make_server(rate=0)

    async def scenario():
        states = []
        async with CuttableProxy(server.port) as proxy, connect(server.url) as publisher, \
                connect(proxy.url, on_state=states.append) as follower:
            subscription = await follower.subscribe("chat")
            await publisher.publish("chat", 0)
            before = await following(subscription, 1)
            proxy.cut()
            for n in range(1, 6):
                await publisher.publish("chat", n)
            proxy.restore()
            during = await following(subscription, 5)
            await publisher.publish("chat", 6)
            after = await following(subscription, 1)
        return before + during + after, [state.name for state in states]

    publications, states = yield run(scenario)
    assert [(pub.data, pub.offset) for pub in publications] == [(n, n + 1) for n in range(7)]
    assert len({pub.epoch for pub in publications}) == 1 and all(pub.sender.startswith("c") for pub in publications)
    assert states[:2] == ["connecting", "connected"] and "reconnecting" in states and states[-2] == "connected"


@pytest.mark.slow  # restarts the server
@pytest_twisted.inlineCallbacks
def test_a_memory_server_restart_raises_recovery_lost_in_the_loop_which_goes_on(tmp_path):
    first = yield testing.start_server(rate=0)
    port, servers = first.port, [first]

    async def scenario():
        async with connect(first.url) as follower:
            subscription = await follower.subscribe("chat")
            async with connect(first.url) as publisher:
                await publisher.publish("chat", "before")
                before = await following(subscription, 1)
            await in_reactor(first.stop)
            servers.append(await in_reactor(testing.start_server, port=port, rate=0))
            with pytest.raises(RecoveryLost) as lost:
                await next_of(subscription)
            async with connect(first.url) as publisher:
                await publisher.publish("chat", "after")
            after = await following(subscription, 1)
            return before[0], lost.value, after[0]

    try:
        before, lost, after = yield run(scenario)
    finally:
        yield servers[-1].stop()
    assert lost.channel == "chat" and lost.position.epoch != before.epoch and lost.position.offset == 0
    assert (after.data, after.offset, after.epoch) == ("after", 1, lost.position.epoch)


@pytest.mark.slow  # waits for a token to expire: about 2 s
@pytest_twisted.inlineCallbacks
def test_an_expired_static_token_ends_the_subscription_loop_without_a_reconnection(make_server, tmp_path):
    tokens = write_tokens(tmp_path / "tokens.yaml", ("soon-token", "sam", "user", {"expires": int(time.time()) + 2}))
    server = yield make_server(require_auth=True, tokens_file=tokens)

    async def scenario():
        states = []
        async with connect(server.url, token="soon-token", on_state=states.append) as client:
            subscription = await client.subscribe("chat")
            with pytest.raises(BifrostError) as caught:
                await next_of(subscription)
        return caught.value, [state.name for state in states]

    error, states = yield run(scenario)
    assert (error.close_code, error.reason) == (1008, "Token expired")
    assert states == ["connecting", "connected", "closed"]


@pytest.mark.slow  # outlives a token of 3 s
@pytest_twisted.inlineCallbacks
def test_a_token_from_get_token_is_refreshed_before_it_expires_without_a_reconnection(make_server, tmp_path):
    secret = "a shared secret of sixty-four bytes or more, as RFC 7518 asks for HS512"
    config = tmp_path / "zbifrost.yaml"
    config.write_text(f"websocket:\n  require_auth: true\n  jwt:\n    secret: {json.dumps(secret)}\n    leeway: 0\n")
    server = yield make_server(config_file=str(config))
    issued = []

    async def get_token():
        issued.append(int(time.time()) + 3)
        return jwt.encode({"sub": "alice", "exp": issued[-1]}, secret, algorithm="HS256")

    async def scenario():
        states = []
        async with connect(server.url, get_token=get_token, on_state=states.append) as client:
            client_id = client.info["client_id"]
            await asyncio.sleep(issued[0] + 1.5 - time.time())  # past the first token's expiry
            result = await client.dispatch("^Ping")
            return result, client_id, client.info["client_id"], [state.name for state in states]

    result, first_id, last_id, states = yield run(scenario)
    assert result == {"message": "Pong!"} and first_id == last_id
    assert states == ["connecting", "connected"] and len(issued) >= 2


@pytest_twisted.inlineCallbacks
def test_subscribe_since_a_saved_position_replays_what_followed_it(make_server):
    server = yield make_server()

    async def scenario():
        async with connect(server.url) as client:
            subscription = await client.subscribe("news")
            for n in range(3):
                await client.publish("news", n, idempotency_key=f"k-{n}")
            saved = subscription.position
        async with connect(server.url) as client:
            await client.publish("news", 3)
            replayed = await client.subscribe("news", since=Position(saved.epoch, 1))
            return saved, await following(replayed, 2)

    saved, replayed = yield run(scenario)
    assert saved.offset == 3  # its own publications moved the position on
    assert [(pub.data, pub.offset) for pub in replayed] == [(1, 2), (2, 3)]
