"""The asyncio client (zbifrost.client) against a real zbifrost: the server runs in the reactor, and each
test's client runs in an asyncio event loop of its own thread (as an application would run it). The
cases it shares with the Twisted client are in test_client_flavours.py."""

import asyncio
import subprocess
import sys

import pytest
import pytest_twisted

from tests.helpers import in_thread, start_engine
from zbifrost.client import BifrostError, connect


def run(scenario, *args):
    """Run `scenario(*args)` (a coroutine function) in an event loop of its own thread, for at most
    a minute; a Deferred."""
    return in_thread(asyncio.run, asyncio.wait_for(scenario(*args), 60))


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
