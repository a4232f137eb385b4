"""Commands in flight: the per-client cap, and what a graceful shutdown does with them."""

import json

import pytest_twisted
from twisted.internet import defer, task

from tests.helpers import http_get, in_thread, start_engine
from zbifrost.testing import connect


def plugin_module(server):
    """The engine workspace's plugin module as this server imported it (fresh per server)."""
    return server.hub.workspace.file("@.zUI.main").blocks["root"].find("Held").action.module.module


def held_deferreds(server):
    """The Deferreds behind the `Held` command, in call order; firing one finishes it. Each
    server imports the plugin anew, so the list starts empty."""
    return plugin_module(server).HELD


def wait_until(condition, reactor, tries=100):
    """Let the reactor run until condition() is true (bounded: tries x 50 ms)."""
    for _ in range(tries):
        if condition():
            return
        yield task.deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.inlineCallbacks
def test_past_max_in_flight_a_dispatch_gets_too_many_requests_and_others_still_answer(make_server):
    server = yield start_engine(make_server, max_in_flight=2)
    held = held_deferreds(server)
    client = yield connect(server.url)
    first, second = client.dispatch("^Held"), client.dispatch("^Held")
    third = yield client.request_frame("dispatch", zKey="^Held")
    assert third["code"] == "too_many_requests"
    assert (yield client.request("ping"))["pong"]  # non-dispatch events are not held up
    other = yield connect(server.url)  # the cap is per client
    other_held = other.dispatch("^Held")
    yield other.request("ping")  # frames are handled in order: the Held dispatch is running
    assert len(held) == 3
    for waiting in list(held):
        waiting.callback(None)
    assert (yield defer.gatherResults([first, second, other_held])) == [{"held": 1}] * 3
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()
    yield other.close()


@pytest_twisted.inlineCallbacks
def test_shutdown_lets_commands_in_flight_reply_refuses_new_ones_then_closes_1001(make_server):
    server = yield start_engine(make_server, shutdown_grace=10)
    held = held_deferreds(server)
    busy = yield connect(server.url)
    idle = yield connect(server.url)
    running = busy.request_frame("dispatch", zKey="^Held")
    yield busy.request("ping")  # the Held dispatch has reached the server
    stopped = server.stop()
    assert (yield idle.next_event("server_shutdown"))["message"] == "Server is shutting down"
    assert (yield idle.closed) == (1001, "Server shutdown")  # nothing in flight: closed at once
    yield busy.next_event("server_shutdown")
    refused = yield busy.request_frame("dispatch", zKey="^Ping")
    assert refused["code"] == "shutting_down"
    assert not stopped.called and busy.close_code is None  # still waiting for the Held command
    status, _, body = yield in_thread(http_get, server.port, "/healthz")
    assert (status, json.loads(body)["status"]) == (503, "stopping")
    held[0].callback(None)
    assert (yield running) == {"result": {"held": 1}, "_requestId": 1}
    assert (yield busy.closed) == (1001, "Server shutdown")
    yield stopped


@pytest_twisted.inlineCallbacks
def test_shutdown_closes_clients_whose_commands_outlive_the_grace(make_server):
    server = yield start_engine(make_server, shutdown_grace=0.2)
    held = held_deferreds(server)
    client = yield connect(server.url)
    client.send({"event": "dispatch", "zKey": "^Held", "_requestId": "late"})
    yield client.request("ping")
    yield server.stop()
    assert (yield client.closed) == (1001, "Server shutdown")
    # the ping's reply is the only one: the same record holds replies, and none with "late"
    assert [frame["_requestId"] for frame in client.frames if "_requestId" in frame] == [1]
    held[0].callback(None)  # the late result goes nowhere and breaks nothing


@pytest_twisted.inlineCallbacks
def test_closing_while_a_dialog_waits_for_input_unregisters_the_client(make_server):
    server = yield start_engine(make_server, max_connections=2)
    for _ in range(3):  # more times than max_connections: a leaked registration would refuse us
        client = yield connect(server.url)
        client.send({"event": "dispatch", "zKey": "^Quick Form", "_requestId": 1})
        yield client.next_event("input_request")
        yield client.close()
    yield from wait_until(lambda: not server.hub.clients, server.hub.reactor)
    assert server.hub.clients == {}
    assert (yield (yield connect(server.url)).dispatch("^Ping")) == {"message": "Pong!"}


@pytest_twisted.inlineCallbacks
def test_threads_that_outlive_their_timeout_keep_their_in_flight_slot_until_they_return(make_server):
    server = yield start_engine(make_server, max_in_flight=2)
    gate = plugin_module(server).GATES["slow"]
    client = yield connect(server.url)
    try:
        for _ in range(2):
            assert (yield client.request_frame("dispatch", zKey="^Slow Thread"))["code"] == "timeout"
        refused = yield client.request_frame("dispatch", zKey="^Slow Thread")
        assert refused["code"] == "too_many_requests"  # both threads are still running
    finally:
        gate.set()
    conn = server.hub.clients[client.info["client_id"]]
    pool = server.hub.thread_pool
    yield from wait_until(lambda: not pool.held_by(conn), server.hub.reactor)
    assert pool.held_by(conn) == 0
    assert (yield client.request_frame("dispatch", zKey="^Slow Thread"))["result"] == {"gate": "slow"}
    yield client.close()
